"""ASHA's budget by simulation: the trial-epochs the sweep's own ASHA scheduler grants, on stand-in trials.

The scheduler is the one the tune stage builds from ``--params`` (``build_scheduler``, given the metric
and mode the way Tune gives them); only the trials are stand-ins. Each stand-in trial has a quality drawn
independently (the order a searcher that has not learned anything yet proposes them in), reports it
once per epoch plus optional noise (``--noise``, in units of the spread of qualities between
configurations), and the epochs of concurrent trials interleave as they do in Tune. ASHA compares trials
only at the same epoch, so a learning curve shared by all trials does not change its decisions; the
order the trials arrive in and the noise do. Repeated over many simulated sweeps, this gives the share of
FIFO's trial-epochs that ASHA uses at given settings, and how often the best configuration runs to the
end: what the ``asha_savings`` benchmark should measure with real training, in seconds instead of hours.

    python -m bench.asha_budget                          # params.yaml's sweep, the asha_savings settings, alternatives
    python -m bench.asha_budget --params profiles/cpu-quick.yaml --only params
"""

from __future__ import annotations

import heapq
import statistics
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np
from ray.tune.schedulers import TrialScheduler

from bench import common
from pedtune.config import ConfigError, StudyConfig, load_config, validate
from pedtune.tune.searchers import build_scheduler

# Settings compared with the params file's own (applied on top of it): the asha_savings runs' (with
# their max_t: train.epochs), then the knobs a user would turn. Each is (label, changes).
VARIANTS: tuple[tuple[str, dict | None], ...] = (
    ("asha_savings' default", {"train": {"epochs": 4}, "tune": {
        "num_samples": 8, "max_concurrent": 2, "asha": {"max_t": None, "grace_period": 1, "reduction_factor": 3}}}),
    ("asha_savings --trials 9 --epochs 9", {"train": {"epochs": 9}, "tune": {
        "num_samples": 9, "max_concurrent": 2, "asha": {"max_t": None, "grace_period": 1, "reduction_factor": 3}}}),
    ("asha_savings --trials 20 --epochs 10 --grace 2", {"train": {"epochs": 10}, "tune": {
        "num_samples": 20, "max_concurrent": 2, "asha": {"max_t": None, "grace_period": 2, "reduction_factor": 3}}}),
    ("asha_savings --trials 20 --epochs 10 --grace 1", {"train": {"epochs": 10}, "tune": {
        "num_samples": 20, "max_concurrent": 2, "asha": {"max_t": None, "grace_period": 1, "reduction_factor": 3}}}),
    ("params, grace 1", {"tune": {"asha": {"grace_period": 1}}}),
    ("params, reduction factor 4", {"tune": {"asha": {"reduction_factor": 4}}}),
    ("params, twice the trials", None),  # filled in from the params file's num_samples
)


@dataclass(frozen=True)
class StandInTrial:
    """What ASHA reads of a trial: its id."""

    trial_id: str


@dataclass(frozen=True)
class SweepOutcome:
    epochs: list[int]  # per trial, in the order the trials started
    best_finished: bool  # the trial of highest quality ran to the last epoch


def simulate_sweep(config: StudyConfig, qualities: np.ndarray, noise: float, rng: np.random.Generator) -> SweepOutcome:
    """One sweep of ``len(qualities)`` stand-in trials through the configured scheduler."""
    cfg = config.tune
    # One bracket (build_scheduler's choice), so ASHA's random bracket draw never varies.
    scheduler = build_scheduler(config)
    scheduler.set_search_properties(cfg.metric, cfg.mode)
    last = min(config.asha_max_t, config.train.epochs)  # the trainable itself stops after train.epochs
    trials = [StandInTrial(f"t{i:04d}") for i in range(len(qualities))]
    epochs = [0] * len(trials)
    running: list[tuple[float, int]] = []  # (time its next epoch ends, trial index)
    started = 0
    sign = 1.0 if cfg.mode == "max" else -1.0  # a stand-in's quality is "higher is better"

    def start(now: float) -> None:
        nonlocal started
        if started < len(trials):
            scheduler.on_trial_add(None, trials[started])
            # Epochs take about one unit; the jitter lets concurrent trials' reports interleave.
            heapq.heappush(running, (now + 1 + 0.05 * rng.random(), started))
            started += 1

    for _ in range(cfg.max_concurrent):
        start(0.0)
    while running:
        now, i = heapq.heappop(running)
        epochs[i] += 1
        result = {"training_iteration": epochs[i], cfg.metric: sign * (qualities[i] + noise * rng.standard_normal())}
        decision = scheduler.on_trial_result(None, trials[i], result)
        if decision == TrialScheduler.STOP or epochs[i] >= last:
            scheduler.on_trial_complete(None, trials[i], result)
            start(now)
        else:
            heapq.heappush(running, (now + 1 + 0.05 * rng.random(), i))
    best = int(np.argmax(qualities))
    return SweepOutcome(epochs, epochs[best] >= last)


def budget(config: StudyConfig, sweeps: int, noise: float, seed: int) -> dict[str, Any]:
    """Share of FIFO's trial-epochs ASHA grants over ``sweeps`` simulated sweeps, and how often the best trial finishes."""
    rng = np.random.default_rng(seed)
    n, max_t = config.tune.num_samples, config.asha_max_t
    fractions, kept = [], 0
    for _ in range(sweeps):
        outcome = simulate_sweep(config, rng.standard_normal(n), noise, rng)
        fractions.append(sum(outcome.epochs) / (n * config.train.epochs))
        kept += outcome.best_finished
    mean, q = statistics.mean(fractions), np.quantile(fractions, [0.1, 0.9])
    return {
        "trials": n, "epochs": config.train.epochs, "max_t": max_t,
        "grace_period": config.tune.asha.grace_period, "reduction_factor": config.tune.asha.reduction_factor,
        "max_concurrent": config.tune.max_concurrent, "noise": noise, "sweeps": sweeps,
        "fraction_of_fifo": {"mean": round(mean, 4), "stdev": round(statistics.stdev(fractions), 4),
                             "p10": round(float(q[0]), 4), "p90": round(float(q[1]), 4)},
        "trial_epochs_mean": round(mean * n * config.train.epochs, 1),
        "best_runs_to_the_end": round(kept / sweeps, 3),
    }


def settings(params: Path, overrides: list[str]) -> list[tuple[str, StudyConfig]]:
    """(label, config) for the params file itself and each variant, all with the ASHA scheduler."""
    # load_config names a missing, unparsable or invalid file; its dump is the file with defaults filled in.
    raw = common.merge(load_config(params).model_dump(mode="json"), common.overrides(overrides))
    raw = common.merge(raw, {"tune": {"scheduler": "asha"}})
    out = [(params.name, validate(raw, source=str(params)))]
    for label, changes in VARIANTS:
        if changes is None:
            changes = {"tune": {"num_samples": 2 * out[0][1].tune.num_samples}}
        if label.startswith("params"):
            label = params.name + label.removeprefix("params")
        out.append((label, validate(common.merge(raw, changes), source=f"{params} ({label})")))
    return out


def main(argv: list[str] | None = None) -> dict:
    p = common.parser(__doc__.split("\n")[0])
    p.set_defaults(params=common.REPO / "params.yaml")
    p.add_argument("--sweeps", type=int, default=400, help="simulated sweeps per setting")
    p.add_argument("--noise", type=float, nargs="+", default=[0.0, 1.0],
                   help="per-epoch score noise, in units of the spread of qualities between configurations")
    p.add_argument("--only", choices=("params",), help="simulate the params file's settings only")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    if args.sweeps < 2:
        p.error("--sweeps must be at least 2")
    if any(v < 0 for v in args.noise):
        p.error("--noise must be >= 0")
    try:
        chosen = settings(args.params, args.overrides)
    except ConfigError as error:
        p.error(str(error))
    common.setup(args)
    rows = []
    for label, config in chosen[:1] if args.only else chosen:
        for noise in args.noise:
            row = {"setting": label, **budget(config, args.sweeps, noise, args.seed)}
            rows.append(row)
            f = row["fraction_of_fifo"]
            common.log(f"{label}, noise {noise:g}: ASHA uses {f['mean']:.1%} ± {f['stdev']:.1%} of FIFO's "
                       f"{row['trials'] * row['epochs']} trial-epochs; best trial finishes in {row['best_runs_to_the_end']:.0%}")
    return common.emit("asha_budget", args, {
        "params": str(args.params), "simulated": rows,
        "note": "the project's ASHAScheduler on stand-in trials (independent qualities, per-epoch noise); no training",
        "target": {"epoch_fraction": "<= 0.4"},
    })


if __name__ == "__main__":
    main()
