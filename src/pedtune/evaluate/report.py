"""The comparison's numbers, and the three ways they are written: metrics JSON, per-seed CSV, Markdown."""

from __future__ import annotations

import csv
import io
import os
import platform
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from pedtune.config import StudyConfig
from pedtune.config.schema import TrainConfig
from pedtune.engine.coco_eval import METRIC_NAMES
from pedtune.evaluate.runs import INITIAL, TUNED, RunResult
from pedtune.evaluate.stats import (
    IMPROVEMENT,
    NO_DIFFERENCE,
    WORSE,
    PairedDifference,
    Spread,
    paired_difference,
    spread,
    verdict,
)

CONFIGS = (INITIAL, TUNED)
DELTA_METRICS = ("bbox_mAP", "segm_mAP")  # the differences metrics/evaluate.json tracks
CONFIDENCE = 0.95
CI_METHOD = "paired Student t-interval"
PER_RUN_KEYS = ("seed", "device")  # set per run or per machine, never tuned: not compared
CI_POSITION = {IMPROVEMENT: "lies above 0", WORSE: "lies below 0", NO_DIFFERENCE: "contains 0"}


@dataclass(frozen=True)
class Comparison:
    seeds: tuple[int, ...]
    scores: dict[str, dict[int, dict[str, float]]]  # config -> seed -> test metric -> value
    spreads: dict[str, dict[str, Spread]]  # config -> test metric -> over seeds
    differences: dict[str, PairedDifference]  # test metric -> tuned - initial, paired by seed


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

    @property
    def primary_metric(self) -> str:
        return self.configs[INITIAL].tune.metric

    @property
    def trained(self) -> list[RunResult]:
        """The runs actually trained: a shared result (tuned == initial) is counted once."""
        return [result for result in self.results if result.trained_as is None]


def compare(results: Iterable[RunResult], seeds: Sequence[int]) -> Comparison:
    scores: dict[str, dict[int, dict[str, float]]] = {name: {} for name in CONFIGS}
    for result in results:
        scores[result.name][result.seed] = result.test
    for name in CONFIGS:
        if sorted(scores[name]) != sorted(seeds):
            raise ValueError(f"{name}: results for seeds {sorted(scores[name])}, expected {sorted(seeds)}")

    def column(name: str, metric: str) -> list[float]:
        return [scores[name][seed][metric] for seed in seeds]

    return Comparison(
        seeds=tuple(seeds),
        scores=scores,
        spreads={name: {metric: spread(column(name, metric)) for metric in METRIC_NAMES} for name in CONFIGS},
        differences={
            metric: paired_difference(column(TUNED, metric), column(INITIAL, metric), CONFIDENCE)
            for metric in METRIC_NAMES
        },
    )


def metrics_json(study: Study) -> dict[str, Any]:
    comparison = study.comparison
    return {
        **{
            name: {
                metric: {"mean": round(s.mean, 6), "std": round(s.std, 6)}
                for metric, s in comparison.spreads[name].items()
            }
            for name in CONFIGS
        },
        "delta": {metric: _delta_json(comparison.differences[metric]) for metric in DELTA_METRICS},
        "verdict": verdict(comparison.differences[study.primary_metric]),
        "verdict_metric": study.primary_metric,
        "confidence": CONFIDENCE,
        "ci_method": CI_METHOD,
        "seeds": list(comparison.seeds),
        "epochs": {name: study.configs[name].train.epochs for name in CONFIGS},
        "train_on": study.configs[INITIAL].evaluate.train_on,
        "runs_trained": len(study.trained),
        "wall_time_s": round(study.wall_time_s, 1),
    }


def _delta_json(difference: PairedDifference) -> dict[str, Any]:
    return {
        "mean": round(difference.mean, 6),
        "ci_low": round(difference.ci_low, 6),
        "ci_high": round(difference.ci_high, 6),
        "verdict": verdict(difference),
    }


def per_seed_csv(results: Iterable[RunResult]) -> str:
    """One row per run; ``run`` is a ready-made label for bar charts (dvc plots)."""
    out = io.StringIO()
    fields = ("config", "seed", "run", *METRIC_NAMES, "wall_time_s")
    writer = csv.DictWriter(out, fieldnames=fields, lineterminator="\n")
    writer.writeheader()
    for result in sorted(results, key=lambda r: (CONFIGS.index(r.name), r.seed)):
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
        "processor / machine": f"{_processor()} / {platform.machine()}",
        "CPUs": str(os.cpu_count()),
        "torch": torch.__version__,
        "device": ", ".join(sorted(set(devices))),
        "runs": execution,
        "params profile": (
            f"model.arch {model.arch}, model.weights {model.weights}, "
            f"{model.min_size}-{model.max_size} px, data.source {config.data.source}"
        ),
    }


def _processor() -> str:
    """platform.processor(), which is empty on most Linux systems: then the CPU model name."""
    if platform.processor():
        return platform.processor()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    return line.partition(":")[2].strip()
    except OSError:
        pass
    return "unknown"


def report_markdown(study: Study) -> str:
    """A paste-ready summary: the headline table, the verdict, hyperparameters, cost and machine."""
    sections = [
        _headline(study),
        _scores_table(study.comparison),
        _verdict_line(study),
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
    return (
        f"**Initial vs tuned configuration on the held-out test split.** Mask R-CNN `{model.arch}` "
        f"(weights: {model.weights}, {model.min_size}-{model.max_size} px); each configuration trained "
        f"{len(study.comparison.seeds)} times (seeds {seeds}) on the {evaluate.train_on} split "
        f"({_plural(study.images['train'], 'image')}) for {epochs_text}, then scored once on the test split "
        f"({_plural(study.images['test'], 'image')})."
    )


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
        lines.append(
            f"| {metric.replace('_', ' ')} | {initial.mean:.3f} ± {initial.std:.3f} | "
            f"{tuned.mean:.3f} ± {tuned.std:.3f} | {difference.mean:+.3f} | "
            f"[{difference.ci_low:+.3f}, {difference.ci_high:+.3f}] |"
        )
    return "\n".join(lines)


def _verdict_line(study: Study) -> str:
    metric = study.primary_metric
    outcome = verdict(study.comparison.differences[metric])
    return (
        f"**Verdict on {metric.replace('_', ' ')} (the metric the search optimised): {outcome}** "
        f"— the {CONFIDENCE:.0%} confidence interval of the paired difference {CI_POSITION[outcome]}."
    )


def _method_note(study: Study) -> str:
    n = len(study.comparison.seeds)
    note = (
        f"Mean ± sample standard deviation over {n} seeds. Δ is the mean of the per-seed differences "
        f"({TUNED} − {INITIAL}, both trained with the same seed); its interval is the Student t-interval "
        f"on those {n} differences ({n - 1} degrees of freedom). Each model is scored after its last "
        "epoch; nothing is selected on the test split, and no seed is the search's own, so no run repeats a trial."
    )
    if len(study.trained) < len(study.results):
        note += (
            f" The search kept the {INITIAL} configuration, so each seed was trained once and that run "
            f"fills both columns: Δ is 0 by construction."
        )
    if study.configs[INITIAL].evaluate.train_on == "train+val":
        note += " The per-epoch val scores in MLflow are on training images here (train_on: train+val)."
    return note


def _hyperparameter_table(study: Study) -> str:
    """The searched train parameters and any other that differs; the rest is shared."""
    initial, tuned = study.configs[INITIAL].train, study.configs[TUNED].train
    searched = {dist.param.partition(".")[2] for dist in study.configs[INITIAL].tune.search_space}
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
        f"{sum(study.configs[r.name].train.epochs for r in trained)} epochs"
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


def _key_value_table(rows: Mapping[str, str]) -> str:
    return "\n".join(["| | |", "|---|---|", *(f"| {key} | {value} |" for key, value in rows.items())])


def _value(value: Any) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def _count(value: float | None) -> str:
    if value is None:
        return "n/a"
    return str(int(value)) if value.is_integer() else f"{value:g}"


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "n/a"
    if seconds < 120:
        return f"{seconds:.1f} s"
    if seconds < 7200:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.2f} h"
