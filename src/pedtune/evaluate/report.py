"""The comparison's numbers, and the three ways they are written: metrics JSON, per-seed CSV, Markdown."""

from __future__ import annotations

import csv
import io
import math
import os
import platform
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from pedtune.config import StudyConfig
from pedtune.config.schema import TrainConfig
from pedtune.engine.coco_eval import IOU_TYPES, METRIC_NAMES, category_metric
from pedtune.evaluate.configs import PER_RUN_KEYS
from pedtune.evaluate.runs import INITIAL, TUNED, RunResult
from pedtune.evaluate.stats import (
    IMPROVEMENT,
    NO_DIFFERENCE,
    UNDETERMINED,
    WORSE,
    PairedDifference,
    Spread,
    paired_difference,
    spread,
    verdict,
)
from pedtune.tracking.record import cpu_model
from pedtune.units import duration

CONFIGS = (INITIAL, TUNED)
DELTA_METRICS = ("bbox_mAP", "segm_mAP")  # the differences metrics/evaluate.json tracks
CONFIDENCE = 0.95
CI_METHOD = "paired Student t-interval"
_INTERVAL = f"the {CONFIDENCE:.0%} confidence interval of the paired difference"
CI_POSITION = {
    IMPROVEMENT: f"{_INTERVAL} lies above 0",
    WORSE: f"{_INTERVAL} lies below 0",
    NO_DIFFERENCE: f"{_INTERVAL} contains 0",
    UNDETERMINED: "fewer than 2 seeds trained both configurations to the end, so there is no interval",
}


@dataclass(frozen=True)
class Comparison:
    seeds: tuple[int, ...]  # evaluate.seeds
    scores: dict[str, dict[int, dict[str, float]]]  # config -> seed -> test metric -> value (finished runs)
    failed: dict[str, dict[int, str]]  # config -> seed -> why, for runs without a test score (RunResult.failure)
    spreads: dict[str, dict[str, Spread | None]]  # config -> test metric -> over its finished runs (None: none)
    differences: dict[str, PairedDifference | None]  # test metric -> tuned - initial over the paired seeds

    @property
    def paired_seeds(self) -> list[int]:
        """The seeds where both configurations finished: the differences are paired over these."""
        return _paired_seeds(self.seeds, self.scores)


def _paired_seeds(seeds: Sequence[int], scores: Mapping[str, Mapping[int, Any]]) -> list[int]:
    return [seed for seed in seeds if all(seed in scores[name] for name in CONFIGS)]


@dataclass(frozen=True)
class Study:
    """Everything the report describes."""

    configs: Mapping[str, StudyConfig]  # as trained (evaluate.epochs applied), per-run seed aside
    comparison: Comparison
    results: Sequence[RunResult]
    search_cost: Mapping[str, float | None]  # from metrics/tune.json; None: not recorded
    images: Mapping[str, int]  # "train" (the train_on part), "val", "test" -> image count
    execution: str
    machine: Mapping[str, str]  # machine_info() and where the runs are recorded
    wall_time_s: float
    categories: Sequence[str] = ()  # the dataset's category names, when it has several

    @property
    def primary_metric(self) -> str:
        return self.configs[INITIAL].tune.metric

    @property
    def tuned_is_initial(self) -> bool:
        """The sweep's best configuration is the initial one: each seed was trained once, for both columns."""
        return any(result.trained_as is not None for result in self.results)

    @property
    def trained(self) -> list[RunResult]:
        """The runs actually trained: a shared result (tuned == initial) is counted once."""
        return [result for result in self.results if result.trained_as is None]


def compare(results: Iterable[RunResult], seeds: Sequence[int]) -> Comparison:
    """Spreads over each configuration's finished runs; differences over the seeds where both finished."""
    scores: dict[str, dict[int, dict[str, float]]] = {name: {} for name in CONFIGS}
    failed: dict[str, dict[int, str]] = {name: {} for name in CONFIGS}
    for result in results:
        if result.failure is None:
            scores[result.name][result.seed] = result.test
        else:
            failed[result.name][result.seed] = result.failure
    for name in CONFIGS:
        ran = sorted([*scores[name], *failed[name]])
        if ran != sorted(seeds):
            raise ValueError(f"{name}: results for seeds {ran}, expected {sorted(seeds)}")
    paired = _paired_seeds(seeds, scores)

    def column(name: str, metric: str, chosen: Sequence[int]) -> list[float]:
        return [scores[name][seed][metric] for seed in chosen]

    def spread_of(name: str, metric: str) -> Spread | None:
        values = column(name, metric, [seed for seed in seeds if seed in scores[name]])
        if len(values) == 1:  # one run finished: its score, with no spread
            return Spread(mean=values[0], std=math.nan, n=1)
        return spread(values) if values else None

    def difference(metric: str) -> PairedDifference | None:
        if len(paired) < 2:
            return None
        return paired_difference(column(TUNED, metric, paired), column(INITIAL, metric, paired), CONFIDENCE)

    return Comparison(
        seeds=tuple(seeds),
        scores=scores,
        failed=failed,
        spreads={name: {metric: spread_of(name, metric) for metric in METRIC_NAMES} for name in CONFIGS},
        differences={metric: difference(metric) for metric in METRIC_NAMES},
    )


def metrics_json(study: Study) -> dict[str, Any]:
    """metrics/evaluate.json: numbers only and few of them (what ``dvc metrics diff`` compares across
    experiments: the headline mAPs, their differences with CIs, the cost). Everything else is in
    :func:`summary_json`."""
    comparison = study.comparison
    return {
        **{
            name: {metric: _spread_json(comparison.spreads[name][metric]) for metric in DELTA_METRICS}
            for name in CONFIGS
        },
        "delta": {metric: _delta_json(_difference(study, metric)) for metric in DELTA_METRICS},
        "runs_trained": len(study.trained),
        "runs_diverged": sum(1 for result in study.trained if result.diverged is not None),
        "runs_out_of_memory": sum(1 for result in study.trained if result.out_of_memory is not None),
        "wall_time_s": round(study.wall_time_s, 1),
    }


def summary_json(study: Study) -> dict[str, Any]:
    """results/evaluate/summary.json: the verdicts, the method and every test metric's spread
    (strings and lists, which DVC cannot diff, stay out of the metrics file)."""
    comparison = study.comparison
    return {
        # None when the search kept the initial configuration: there is no tuned model to compare.
        "verdict": None if study.tuned_is_initial else verdict(comparison.differences[study.primary_metric]),
        "verdict_metric": study.primary_metric,
        "delta_verdicts": {
            metric: None if study.tuned_is_initial else verdict(comparison.differences[metric])
            for metric in DELTA_METRICS
        },
        "confidence": CONFIDENCE,
        "ci_method": CI_METHOD,
        "seeds": list(comparison.seeds),
        "epochs": {name: study.configs[name].train.epochs for name in CONFIGS},
        "train_on": study.configs[INITIAL].evaluate.train_on,
        "tuned_is_initial": study.tuned_is_initial,
        **{
            name: {metric: _spread_json(s) for metric, s in comparison.spreads[name].items()}
            for name in CONFIGS
        },
    }


def _difference(study: Study, metric: str) -> PairedDifference | None:
    """Tuned - initial, or None when both columns are the same runs (a difference of 0 by construction)."""
    return None if study.tuned_is_initial else study.comparison.differences[metric]


def _spread_json(value: Spread | None) -> dict[str, float | None]:
    if value is None:
        return {"mean": None, "std": None}
    return {"mean": round(value.mean, 6), "std": round(value.std, 6) if value.n > 1 else None}


def _delta_json(difference: PairedDifference | None) -> dict[str, float | None]:
    if difference is None:
        return {"mean": None, "ci_low": None, "ci_high": None}
    return {
        "mean": round(difference.mean, 6),
        "ci_low": round(difference.ci_low, 6),
        "ci_high": round(difference.ci_high, 6),
    }


def per_seed_csv(results: Iterable[RunResult]) -> str:
    """One row per run that finished (a diverged or out-of-memory run has no test score); ``run`` labels bar charts."""
    out = io.StringIO()
    fields = ("config", "seed", "run", *METRIC_NAMES, "wall_time_s")
    writer = csv.DictWriter(out, fieldnames=fields, lineterminator="\n")
    writer.writeheader()
    finished = [result for result in results if result.failure is None]
    for result in sorted(finished, key=lambda r: (CONFIGS.index(r.name), r.seed)):
        writer.writerow(
            {
                "config": result.name,
                "seed": result.seed,
                "run": f"{result.name} seed {result.seed}",
                **{metric: f"{result.test[metric]:.6g}" for metric in METRIC_NAMES},
                "wall_time_s": f"{result.wall_time_s:.1f}",
            }
        )
    return out.getvalue()


def machine_info(config: StudyConfig, devices: Iterable[str], execution: str) -> dict[str, str]:
    model = config.model
    return {
        "processor / machine": f"{cpu_model()} / {platform.machine()}",
        "CPUs": str(os.cpu_count()),
        "torch": torch.__version__,
        "device": ", ".join(sorted(set(devices))),
        "runs": execution,
        "params profile": (
            f"model.arch {model.arch}, model.weights {model.weights}, "
            f"{model.min_size}-{model.max_size} px"
        ),
    }


def report_markdown(study: Study) -> str:
    """A paste-ready summary: the headline table, the verdict, hyperparameters, cost and machine."""
    per_category = [_per_category_table(study)] if len(study.categories) > 1 else []
    failed = [_failed_note(study.comparison)] if any(study.comparison.failed.values()) else []
    if study.tuned_is_initial:
        findings = [_initial_table(study.comparison), *per_category, *failed, _no_tuned_model(study)]
    else:
        findings = [_scores_table(study.comparison), *per_category, *failed, _verdict_line(study)]
    sections = [
        _headline(study),
        *findings,
        _method_note(study),
        "### Configurations",
        _hyperparameter_table(study),
        "### Cost",
        _cost_table(study),
        "### Machine and provenance",
        _key_value_table(study.machine),
    ]
    return "\n\n".join(sections) + "\n"


def _headline(study: Study) -> str:
    initial = study.configs[INITIAL]
    model, evaluate = initial.model, initial.evaluate
    epochs = {name: study.configs[name].train.epochs for name in CONFIGS}
    epochs_text = (
        _plural(epochs[INITIAL], "epoch")
        if len(set(epochs.values())) == 1
        else " / ".join(f"{count} ({name})" for name, count in epochs.items()) + " epochs"
    )
    seeds = ", ".join(str(seed) for seed in study.comparison.seeds)
    title, trained = (
        ("The initial configuration on the held-out test split.", "it was trained")
        if study.tuned_is_initial
        else ("Initial vs tuned configuration on the held-out test split.", "each configuration trained")
    )
    return (
        f"**{title}** Mask R-CNN `{model.arch}` "
        f"(weights: {model.weights}, {model.min_size}-{model.max_size} px); {trained} "
        f"{len(study.comparison.seeds)} times (seeds {seeds}) on the {evaluate.train_on} split "
        f"({_plural(study.images['train'], 'image')}) for {epochs_text}, then scored once on the test split "
        f"({_plural(study.images['test'], 'image')})."
    )


def _signed(value: float) -> str:
    """A difference to 3 decimals, or to 2 significant digits where 3 decimals would read 0.000:
    the verdict is given on the exact interval, and a bound of +0.0004 must not print as +0.000."""
    text = f"{value:+.3f}"
    return f"{value:+.1e}" if value != 0 and float(text) == 0 else text


def _plural(count: int, noun: str) -> str:
    return f"{count} {noun}" + ("" if count == 1 else "s")


def _scores_table(comparison: Comparison) -> str:
    percent = f"{CONFIDENCE:.0%}"
    lines = [
        f"| test metric | {INITIAL} | {TUNED} | Δ {TUNED} − {INITIAL} | {percent} CI of Δ |",
        "|---|---|---|---|---|",
    ]
    for metric in METRIC_NAMES:
        initial, tuned = comparison.spreads[INITIAL][metric], comparison.spreads[TUNED][metric]
        difference = comparison.differences[metric]
        delta, interval = "n/a", "n/a"
        if difference is not None:
            delta = _signed(difference.mean)
            interval = f"[{_signed(difference.ci_low)}, {_signed(difference.ci_high)}]"
        lines.append(
            f"| {metric.replace('_', ' ')} | {_mean_std(initial)} | {_mean_std(tuned)} | {delta} | {interval} |"
        )
    return "\n".join(lines)


def _initial_table(comparison: Comparison) -> str:
    """The scores table when there is no tuned model: the initial configuration's column alone."""
    lines = [f"| test metric | {INITIAL} |", "|---|---|"]
    lines += [f"| {metric.replace('_', ' ')} | {_mean_std(comparison.spreads[INITIAL][metric])} |"
              for metric in METRIC_NAMES]
    return "\n".join(lines)


def _no_tuned_model(study: Study) -> str:
    """What the study found when the sweep's best configuration is the initial one, with no verdict:
    nothing was compared. The searcher's best proposal measures how close the search came."""
    metric = study.primary_metric
    initial = study.search_cost.get(f"initial_{metric}")
    proposal = study.search_cost.get(f"best_searched_{metric}")
    line = "**The sweep's best configuration is the initial one; there is no tuned model to compare.**"
    label = metric.replace("_", " ")
    if initial is None or proposal is None:
        return line + " No configuration the searcher proposed has a val score to set beside it (metrics/tune.json)."
    return line + (
        f" The searcher's best proposal reached val {label} {proposal:.4f} against the initial configuration's "
        f"{initial:.4f} ({_signed(proposal - initial)}): one trial each in the sweep, so this gap has no "
        "confidence interval; it says how close the search came, not whether it could have won."
    )


def _per_category_table(study: Study) -> str:
    """Each category's test AP, mean ± std over a configuration's finished runs; "n/a" where the
    test split holds none of it (COCOeval has nothing to score), not 0."""
    scores = study.comparison.scores
    configs = (INITIAL,) if study.tuned_is_initial else CONFIGS  # the same runs fill both columns
    header = " | ".join(f"{iou} AP {name}" for name in configs for iou in IOU_TYPES)
    lines = [f"| category | {header} |", "|---|" + "---|" * (len(configs) * len(IOU_TYPES))]
    for category in study.categories:
        cells = []
        for name in configs:
            for iou in IOU_TYPES:
                key = category_metric(iou, category)
                values = [run[key] for run in scores[name].values() if key in run]
                cells.append(_mean_std(None if not values else Spread(values[0], math.nan, 1) if len(values) == 1
                                       else spread(values)))
        lines.append(f"| {category} | {' | '.join(cells)} |")
    return "Per category (AP at IoU 0.50:0.95; the headline mAP above is their mean):\n\n" + "\n".join(lines)


def _mean_std(value: Spread | None) -> str:
    if value is None:
        return "n/a"
    return f"{value.mean:.3f} (1 run)" if value.n == 1 else f"{value.mean:.3f} ± {value.std:.3f}"


def _failed_note(comparison: Comparison) -> str:
    runs = "; ".join(
        f"{name} seed {seed} ({why})" for name in CONFIGS for seed, why in sorted(comparison.failed[name].items())
    )
    paired = comparison.paired_seeds
    note = (
        f"**Runs without a test score**: {runs}. Each column's mean ± std covers its "
        f"runs that finished; Δ and its interval cover the {_plural(len(paired), 'seed')} where both "
        f"configurations finished ({', '.join(str(seed) for seed in paired) or 'none'})."
    )
    if any(why.startswith("out of memory") for failed in comparison.failed.values() for why in failed.values()):
        note += " A run that ran out of memory was trained once more, alone, after the others, and failed again."
    # The pictures show each configuration's model from the first seed; a failed run has none.
    first = comparison.seeds[0]
    missing = [name for name in CONFIGS if first in comparison.failed[name]]
    if missing:
        note += f" The pictures show no {' or '.join(missing)} model: its seed {first} run, the one drawn, did not finish."
    return note


def _verdict_line(study: Study) -> str:
    metric = study.primary_metric
    difference = study.comparison.differences[metric]
    outcome = verdict(difference)
    line = (
        f"**Verdict on {metric.replace('_', ' ')} (the metric the search optimised): {outcome}** "
        f"— {CI_POSITION[outcome]}."
    )
    # Equal differences at every seed give a t-interval of zero width (up to rounding), which
    # reads as certainty; it only means these few seeds did not show the spread.
    if difference is not None and difference.mean != 0 and difference.ci_high - difference.ci_low < 1e-9:
        line += (
            " The per-seed differences are all equal, so the interval has no width: these seeds "
            "show no spread of the difference, which more seeds would measure."
        )
    return line


def _method_note(study: Study) -> str:
    comparison = study.comparison
    n, pairs = len(comparison.seeds), len(comparison.paired_seeds)
    over = f"over {n} seeds" if not any(comparison.failed.values()) else "over each configuration's finished runs"
    interval = (
        f"; its interval is the Student t-interval on those {pairs} differences ({pairs - 1} degrees of freedom)"
        if pairs >= 2
        else ""
    )
    delta = (
        ""
        if study.tuned_is_initial
        else f" Δ is the mean of the per-seed differences ({TUNED} − {INITIAL}, both trained with the same "
        f"seed){interval}."
    )
    note = (
        f"Mean ± sample standard deviation {over}.{delta} Each model is scored after its last "
        "epoch; nothing is selected on the test split, and no seed is the search's own, so no run repeats a trial."
    )
    if study.configs[INITIAL].evaluate.train_on == "train+val":
        note += " The per-epoch val scores in MLflow are on training images here (train_on: train+val)."
    return note


def _hyperparameter_table(study: Study) -> str:
    """The searched train parameters and any other that differs; the rest is shared."""
    initial, tuned = study.configs[INITIAL].train, study.configs[TUNED].train
    searched = {dist.train_key for dist in study.configs[INITIAL].tune.search_space}
    lines = [f"| train parameter | {INITIAL} | {TUNED} |", "|---|---|---|"]
    for key in TrainConfig.model_fields:
        before, after = getattr(initial, key), getattr(tuned, key)
        if key in PER_RUN_KEYS or (key not in searched and before == after):
            continue
        label = f"{key} (searched)" if key in searched else key
        lines.append(f"| {label} | {_value(before)} | {_value(after)} |")
    return "\n".join(lines)


def _cost_table(study: Study) -> str:
    cost = study.search_cost
    trained = study.trained
    configs_text = f"{len(CONFIGS)} configs" if len(trained) == len(study.results) else "1 config (tuned = initial)"
    runs_text = (
        f"{len(trained)} ({configs_text} × {len(study.comparison.seeds)} seeds), "
        f"{sum(_epochs_trained(study, r) for r in trained)} epochs"
    )
    mean_times = " / ".join(
        _duration(sum(r.wall_time_s for r in runs) / len(runs))
        for runs in ([r for r in study.results if r.name == name] for name in CONFIGS)
    )
    return _key_value_table(
        {
            "search: trials": _count(cost.get("num_trials")),
            "search: epochs trained by all trials": _count(cost.get("trial_epochs")),
            "search: wall time": _duration(cost.get("wall_time_s")),
            "evaluation: training runs": runs_text,
            f"evaluation: mean time per run ({INITIAL} / {TUNED})": mean_times,
            "evaluation: wall time": _duration(study.wall_time_s),
        }
    )


def _epochs_trained(study: Study, result: RunResult) -> int:
    """A finished run's epochs; a failed one's completed epochs (the partial one not counted)."""
    return study.configs[result.name].train.epochs if result.failure is None else len(result.history)


def _key_value_table(rows: Mapping[str, str]) -> str:
    return "\n".join(["| | |", "|---|---|", *(f"| {key} | {value} |" for key, value in rows.items())])


def _value(value: Any) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def _count(value: float | None) -> str:
    if value is None:
        return "n/a"
    return str(int(value)) if value.is_integer() else f"{value:g}"


def _duration(seconds: float | None) -> str:
    return "n/a" if seconds is None else duration(seconds)
