"""What the replayed sweeps say: regret per variant with its spread over seeds, plots and the verdict.

A sweep's pick is the trial the tune stage would pick (:func:`pedtune.tune.results.best_trial`:
the best final score among the trials that ran every epoch), judged on the one recorded seed
its trial replayed. Its *regret* is how much worse the picked configuration is than the
table's best, both measured by the mean final score over all recorded seeds: what a user
would get from retraining the pick, not the lucky seed the sweep saw.
"""

from __future__ import annotations

import csv
import io
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure
from scipy import stats

from pedtune.replay.real import REAL_FOLDER, RealSweep
from pedtune.replay.sweep import ReplayedTrial, Sweep
from pedtune.replay.table import Table
from pedtune.config import StudyConfig
from pedtune.io import atomic_path, write_json
from pedtune.tune.results import COMPLETED, ERROR, STOPPED_EARLY, TrialRecord, best_trial

BASELINE = ("random", "fifo")
CONFIDENCE = 0.95


@dataclass(frozen=True)
class Outcome:
    """One sweep judged against the table."""

    seed: int
    picked: int  # configuration number; -1 if no trial finished
    picked_score: float  # the picked trial's final score on the seed it replayed (what the sweep reported)
    regret: float
    trial_epochs: int
    found_best: bool
    best_tried: bool
    best_stopped_early: bool
    curve: tuple[float, ...]  # the picked configuration's mean score after each report, in arrival order
    wall_s: float


def _record(trial: ReplayedTrial, epochs: int, metric: str, reported: int, final: bool) -> TrialRecord:
    scores = trial.scores[:reported]
    if final and trial.errored:
        status = ERROR
    else:
        status = COMPLETED if len(scores) >= epochs else STOPPED_EARLY
    return TrialRecord(trial_id=str(trial.proposal), overrides={"configuration": trial.configuration},
                       status=status, is_initial=trial.proposal == 1, metric=metric,
                       history=tuple({"epoch": e, metric: s} for e, s in enumerate(scores, start=1)), time_s=0.0)


def _pick(records: list[TrialRecord]) -> int:
    return _configuration(best_trial(records))


def _configuration(record: TrialRecord | None) -> int:
    return -1 if record is None else int(record.overrides["configuration"])


def judge(sweep: Sweep, table: Table, metric: str) -> Outcome:
    by_proposal = {t.proposal: t for t in sweep.trials}
    best = table.best_config(metric)
    top = table.true_score(best, metric)

    def worth(config: int) -> float:
        return table.true_score(config, metric) if config >= 0 else 0.0

    reported: dict[int, int] = {}
    curve = []
    for proposal, epoch in sweep.events:
        reported[proposal] = epoch
        records = [_record(by_proposal[p], table.epochs, metric, n, final=False) for p, n in sorted(reported.items())]
        curve.append(worth(_pick(records)))
    final = [_record(t, table.epochs, metric, len(t.scores), final=True) for t in sweep.trials]
    pick = best_trial(final)
    picked = _configuration(pick)
    of_best = [r for r, t in zip(final, sweep.trials) if t.configuration == best]
    return Outcome(
        seed=sweep.seed, picked=picked, picked_score=math.nan if pick is None else pick.final,
        regret=top - worth(picked), trial_epochs=len(sweep.events),
        found_best=picked == best, best_tried=bool(of_best),
        best_stopped_early=any(r.status == STOPPED_EARLY for r in of_best), curve=tuple(curve), wall_s=sweep.wall_s,
    )


@dataclass(frozen=True)
class Interval:
    mean: float
    low: float
    high: float


def mean_interval(values: list[float]) -> Interval:
    array = np.asarray(values, dtype=np.float64)
    mean = float(array.mean())
    if len(array) < 2 or float(array.std(ddof=1)) == 0.0:
        return Interval(mean, mean, mean)
    half = float(stats.t.ppf(0.5 + CONFIDENCE / 2, len(array) - 1)) * float(array.std(ddof=1)) / math.sqrt(len(array))
    return Interval(mean, mean - half, mean + half)


def difference_interval(values: list[float], baseline: list[float]) -> Interval:
    """Welch's interval for mean(values) - mean(baseline): the sweeps of two variants are independent."""
    a, b = np.asarray(values, dtype=np.float64), np.asarray(baseline, dtype=np.float64)
    mean = float(a.mean() - b.mean())
    va, vb = a.var(ddof=1) / len(a), b.var(ddof=1) / len(b)
    if va + vb == 0.0:
        return Interval(mean, mean, mean)
    dof = (va + vb) ** 2 / (va**2 / (len(a) - 1) + vb**2 / (len(b) - 1))
    half = float(stats.t.ppf(0.5 + CONFIDENCE / 2, dof)) * math.sqrt(va + vb)
    return Interval(mean, mean - half, mean + half)


def verdict_word(difference: Interval | None) -> str:
    if difference is None:
        return "baseline"
    if difference.high < 0:
        return "lower regret (beyond the seed spread)"
    if difference.low > 0:
        return "higher regret (beyond the seed spread)"
    return "no detectable difference"


def curve_matrix(outcomes: list[Outcome], length: int) -> np.ndarray:
    """Sweeps × reports; a sweep that ended keeps its final value (it spends no more trial-epochs)."""
    rows = []
    for outcome in outcomes:
        curve = list(outcome.curve) or [0.0]
        rows.append(curve + [curve[-1]] * (length - len(curve)))
    return np.asarray(rows, dtype=np.float64)


def _fmt(value: float) -> str:
    return f"{value:.4f}"


def _interval(interval: Interval) -> str:
    return f"{interval.mean:.4f} [{interval.low:.4f}, {interval.high:.4f}]"


def summarise(results: dict[Any, list[Outcome]]) -> list[dict[str, Any]]:
    rows = []
    for variant, outcomes in results.items():
        regrets = [o.regret for o in outcomes]
        baseline = next((o for v, o in results.items() if (v.searcher, v.scheduler) == BASELINE
                         and v.budget == variant.budget), None)
        is_baseline = (variant.searcher, variant.scheduler) == BASELINE
        difference = None if baseline is None or is_baseline else difference_interval(regrets, [o.regret for o in baseline])
        rows.append({
            "variant": variant, "sweeps": len(outcomes), "regret": mean_interval(regrets),
            "regret_sd": float(np.std(regrets, ddof=1)) if len(regrets) > 1 else 0.0,
            "found_best": float(np.mean([o.found_best for o in outcomes])),
            "best_stopped_early": float(np.mean([o.best_stopped_early for o in outcomes])),
            "best_tried": float(np.mean([o.best_tried for o in outcomes])),
            "trial_epochs": float(np.mean([o.trial_epochs for o in outcomes])),
            "difference": difference,
            "verdict": "baseline" if is_baseline else ("no baseline" if baseline is None else verdict_word(difference)),
            "wall_s": float(np.sum([o.wall_s for o in outcomes])),
        })
    return rows


def verdict_markdown(rows: list[dict[str, Any]], config: StudyConfig, table: Table, provenance: dict[str, Any],
                     folder: Path, wall_s: float) -> str:
    metric = config.tune.metric
    best = table.best_config(metric)
    ranked = sorted(range(table.configs), key=lambda c: table.true_score(c, metric), reverse=True)
    runner_up = ranked[1] if len(ranked) > 1 else best
    cfg = config.tune
    lines = [
        "# Which searcher and scheduler to trust at this budget: replayed sweeps",
        "",
        f"Table: `{folder}` ({table.configs} configurations × {len(table.seeds)} training seeds × {table.epochs} epochs, "
        f"model {config.model.arch} at {config.model.min_size}-{config.model.max_size} px, weights "
        f"{config.model.weights}; dataset hash {provenance['dataset_hash'][:12]}, recorded at pedtune commit "
        f"{provenance.get('pedtune_commit', 'unknown')[:12]}).",
        f"Best configuration: #{best} ({_overrides(table.overrides(best))}), mean final val {metric} "
        f"{table.true_score(best, metric):.4f} over its seeds; the runner-up #{runner_up} "
        f"{table.true_score(runner_up, metric):.4f}. A single run's seed noise (pooled sd between seeds): "
        f"{table.seed_spread(metric):.4f}.",
        f"Sweeps: real Ray Tune sweeps with the project's searcher and scheduler builders; ASHA grace "
        f"{cfg.asha.grace_period}, reduction factor {cfg.asha.reduction_factor:g}, max_t {table.epochs}; "
        f"{cfg.max_concurrent} trial(s) at a time; the first trial is the train section's configuration. "
        f"{rows[0]['sweeps']} searcher seeds per variant; {len(rows)} variants in {wall_s / 60:.1f} min.",
        "",
        f"Regret = the table's best mean final val {metric} − the picked configuration's (lower is better; "
        f"mean over sweeps [{CONFIDENCE:.0%} t-interval]). Δ vs random+fifo: Welch {CONFIDENCE:.0%} interval of the "
        "difference in mean regret; 'beyond the seed spread' when it excludes 0.",
        "",
        "| variant | budget (trials) | regret | sd over seeds | found the best | best config stopped early | "
        "trial-epochs | Δ regret vs random+fifo | verdict |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        variant = row["variant"]
        difference = "—" if row["difference"] is None else _interval(row["difference"])
        lines.append(
            f"| {variant.searcher}+{variant.scheduler} | {variant.budget} | {_interval(row['regret'])} | "
            f"{row['regret_sd']:.4f} | {row['found_best']:.0%} | {row['best_stopped_early']:.0%} | "
            f"{row['trial_epochs']:.1f} | {difference} | {row['verdict']} |"
        )
    lines += [
        "",
        "'best config stopped early': share of sweeps in which ASHA stopped a trial of the table's best configuration "
        "before its last epoch. Plots: `best_so_far.png` (the picked configuration's mean score against trial-epochs "
        "spent, mean and 95 % band over seeds), `regret.png` (each sweep's final regret). Per-sweep data: `sweeps.csv`.",
        "",
    ]
    return "\n".join(lines)


@dataclass(frozen=True)
class RealCheck:
    """A real sweep set against the replayed sweeps of its variant."""

    real: RealSweep
    replays: int  # replayed sweeps of the same variant; 0: the variant was not replayed
    score_range: tuple[float, float]  # central 95 % of the replays' picked scores
    score_percentile: float  # share of replays whose picked score is below the real one (ties count half)
    epochs_range: tuple[float, float]
    regret: float

    @property
    def inside(self) -> bool:
        low, high = self.score_range
        return self.replays > 0 and low <= self.real.picked_score <= high


def _percentile(values: list[float], value: float) -> float:
    array = np.asarray(values, dtype=np.float64)
    return float((np.sum(array < value) + 0.5 * np.sum(array == value)) / len(array))


def _central(values: list[float]) -> tuple[float, float]:
    tail = 100 * (1 - CONFIDENCE) / 2
    return float(np.percentile(values, tail)), float(np.percentile(values, 100 - tail))


def check_real(real: list[RealSweep], results: dict[Any, list[Outcome]], table: Table, metric: str) -> list[RealCheck]:
    top = table.true_score(table.best_config(metric), metric)
    checks = []
    for sweep in real:
        outcomes = [o for o in results.get(sweep.variant, []) if math.isfinite(o.picked_score)]
        regret = top - (table.true_score(sweep.picked, metric) if sweep.picked >= 0 else 0.0)
        if not outcomes:
            checks.append(RealCheck(sweep, 0, (math.nan, math.nan), math.nan, (math.nan, math.nan), regret))
            continue
        scores = [o.picked_score for o in outcomes]
        checks.append(RealCheck(sweep, len(outcomes), _central(scores), _percentile(scores, sweep.picked_score),
                                _central([float(o.trial_epochs) for o in outcomes]), regret))
    return checks


def real_markdown(checks: list[RealCheck], metric: str) -> list[str]:
    if not checks:
        return []
    lines = [
        "## Real sweeps against their replay",
        "",
        f"Each real sweep is the tune stage run for real on the recorded problem (`{REAL_FOLDER}/` beside the table). "
        f"Its pick's val {metric} is set against the picked scores of the replayed sweeps of the same variant: "
        f"their central {CONFIDENCE:.0%} range, and the share of replayed sweeps below it. The pick is mapped to "
        "the grid configuration whose bins hold it, for its regret.",
        "",
        f"| real sweep | variant | seed | picked configuration | its val {metric} | replay's {CONFIDENCE:.0%} range | "
        f"percentile in the replay | inside | trial-epochs | replay's {CONFIDENCE:.0%} range | regret of the pick |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for check in checks:
        real = check.real
        if check.replays == 0:
            lines.append(f"| {real.name} | {real.variant.label} | {real.seed} | #{real.picked} | "
                         f"{_fmt(real.picked_score)} | not replayed | — | — | {real.trial_epochs} | — | "
                         f"{_fmt(check.regret)} |")
            continue
        low, high = check.score_range
        epochs_low, epochs_high = check.epochs_range
        lines.append(f"| {real.name} | {real.variant.label} | {real.seed} | #{real.picked} | "
                     f"{_fmt(real.picked_score)} | "
                     f"[{_fmt(low)}, {_fmt(high)}] | {check.score_percentile:.0%} | "
                     f"{'yes' if check.inside else 'no'} | {real.trial_epochs} | "
                     f"[{epochs_low:.1f}, {epochs_high:.1f}] | {_fmt(check.regret)} |")
    return [*lines, ""]


def _overrides(overrides: dict[str, Any]) -> str:
    return ", ".join(f"{k.removeprefix('train.')} {v:g}" if isinstance(v, float) else f"{k.removeprefix('train.')} {v}"
                     for k, v in overrides.items())


def sweeps_csv(results: dict[Any, list[Outcome]]) -> str:
    out = io.StringIO()
    fields = ["searcher", "scheduler", "budget", "seed", "picked", "picked_score", "regret", "trial_epochs",
              "found_best", "best_tried", "best_stopped_early", "wall_s"]
    writer = csv.DictWriter(out, fieldnames=fields, lineterminator="\n")
    writer.writeheader()
    for variant, outcomes in results.items():
        for o in outcomes:
            writer.writerow({"searcher": variant.searcher, "scheduler": variant.scheduler, "budget": variant.budget,
                             "seed": o.seed, "picked": o.picked,
                             "picked_score": "" if math.isnan(o.picked_score) else f"{o.picked_score:.6g}",
                             "regret": f"{o.regret:.6g}",
                             "trial_epochs": o.trial_epochs, "found_best": str(o.found_best).lower(),
                             "best_tried": str(o.best_tried).lower(),
                             "best_stopped_early": str(o.best_stopped_early).lower(), "wall_s": f"{o.wall_s:.2f}"})
    return out.getvalue()


def plot_best_so_far(results: dict[Any, list[Outcome]], table: Table, metric: str) -> Figure:
    budgets = sorted({v.budget for v in results})
    figure = Figure(figsize=(6.5 * len(budgets), 4.5), layout="constrained")
    for ax, budget in zip(figure.subplots(1, len(budgets), squeeze=False)[0], budgets):
        ax.axhline(table.true_score(table.best_config(metric), metric), color="black", linestyle=":",
                   label="table's best")
        for variant, outcomes in results.items():
            if variant.budget != budget:
                continue
            length = max(len(o.curve) for o in outcomes)
            matrix = curve_matrix(outcomes, length)
            x = np.arange(1, length + 1)
            mean = matrix.mean(axis=0)
            half = stats.t.ppf(0.5 + CONFIDENCE / 2, max(len(outcomes) - 1, 1)) * matrix.std(axis=0, ddof=1) / math.sqrt(len(outcomes)) \
                if len(outcomes) > 1 else np.zeros_like(mean)
            style = "-" if variant.scheduler == "asha" else "--"
            line, = ax.plot(x, mean, style, label=f"{variant.searcher}+{variant.scheduler}")
            ax.fill_between(x, mean - half, mean + half, color=line.get_color(), alpha=0.15)
        ax.set_xlabel("cumulative trial-epochs")
        ax.set_ylabel(f"picked configuration's mean val {metric}")
        ax.set_title(f"{budget} trials per sweep (band: 95 % CI of the mean)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize="small")
    return figure


def plot_regret(results: dict[Any, list[Outcome]]) -> Figure:
    labels = [f"{v.searcher}+{v.scheduler}\n{v.budget} trials" for v in results]
    figure = Figure(figsize=(max(6.0, 1.3 * len(labels)), 4.5), layout="constrained")
    ax = figure.subplots()
    data = [[o.regret for o in outcomes] for outcomes in results.values()]
    ax.boxplot(data, showmeans=True)
    ax.set_xticks(range(1, len(labels) + 1), labels, fontsize="small")
    rng = np.random.default_rng(0)
    for position, values in enumerate(data, start=1):
        ax.scatter(position + rng.uniform(-0.15, 0.15, len(values)), values, s=8, alpha=0.4, color="tab:blue")
    ax.set_ylabel("final regret (table's best − picked, mean val score)")
    ax.set_title("final regret per sweep (triangle: mean)")
    ax.grid(alpha=0.3, axis="y")
    return figure


def comparison_json(rows: list[dict[str, Any]], wall_s: float, checks: list[RealCheck]) -> dict[str, Any]:
    real = {
        check.real.name: {
            "picked": check.real.picked,
            "picked_score": None if math.isnan(check.real.picked_score) else round(check.real.picked_score, 6),
            "replays": check.replays, "percentile": None if check.replays == 0 else round(check.score_percentile, 4),
            "inside": check.inside, "trial_epochs": check.real.trial_epochs, "regret": round(check.regret, 6),
        }
        for check in checks
    }
    return {
        "real_sweeps": real,
        "wall_time_s": round(wall_s, 1),
        "variants": {
            f"{r['variant'].searcher}+{r['variant'].scheduler}+{r['variant'].budget}": {
                "regret_mean": round(r["regret"].mean, 6), "regret_ci_low": round(r["regret"].low, 6),
                "regret_ci_high": round(r["regret"].high, 6), "found_best": round(r["found_best"], 4),
                "best_stopped_early": round(r["best_stopped_early"], 4), "trial_epochs": round(r["trial_epochs"], 2),
                "sweeps": r["sweeps"], "verdict": r["verdict"],
            }
            for r in rows
        },
    }


def write_comparison(output: Path, config: StudyConfig, table: Table, provenance: dict[str, Any], folder: Path,
                     sweeps: dict[Any, list[Sweep]], wall_s: float, real: list[RealSweep]) -> list[dict[str, Any]]:
    """verdict.md, sweeps.csv, compare.json and the two plots, swapped into ``output`` whole."""
    metric = config.tune.metric
    results = {variant: [judge(s, table, metric) for s in runs] for variant, runs in sweeps.items()}
    rows = summarise(results)
    checks = check_real(real, results, table, metric)
    with atomic_path(output) as tmp:
        tmp.mkdir()
        verdict = "\n".join([verdict_markdown(rows, config, table, provenance, folder, wall_s),
                              *real_markdown(checks, metric)])
        (tmp / "verdict.md").write_text(verdict, encoding="utf-8")
        (tmp / "sweeps.csv").write_text(sweeps_csv(results), encoding="utf-8")
        write_json(tmp / "compare.json", comparison_json(rows, wall_s, checks))
        plot_best_so_far(results, table, metric).savefig(tmp / "best_so_far.png", dpi=110)
        plot_regret(results).savefig(tmp / "regret.png", dpi=110)
    return rows
