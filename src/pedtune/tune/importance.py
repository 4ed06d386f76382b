"""Which searched hyperparameters mattered: Optuna's importance evaluators on a finished sweep, whatever its searcher.

The sweep's trials become the trials of an in-memory Optuna study (``create_trial`` with the
declared distributions), which fANOVA and PED-ANOVA then read.

Which score: ASHA stops trials at different epochs, and a score after 2 epochs is not
comparable with one after 10. Each trial is scored at the *deepest epoch every scored trial
reached* (under ASHA the first rung; under FIFO the last epoch), so every trial is measured
at the same point of training. Errored trials, and trials without a score there, are left out.

Too few trials: fANOVA fits a random forest to the (parameters -> score) points and reads
each parameter's share of the variance from it. Below ``MIN_TRIALS`` trials, or below
``MIN_TRIALS_PER_PARAM`` per searched parameter, each of the forest's splits rests on one or
two points; no numbers are given then, only a sentence saying so.
"""

from __future__ import annotations

import csv
import io
import math
import warnings
from dataclasses import dataclass, field
from typing import Any

import optuna
from matplotlib.figure import Figure
from optuna.distributions import BaseDistribution, CategoricalDistribution, FloatDistribution, IntDistribution

from pedtune.config.schema import Distribution, TrainConfig
from pedtune.tune.results import ERROR, TrialRecord
from pedtune.tune.space import typed_value

MIN_TRIALS = 10
MIN_TRIALS_PER_PARAM = 3
EVALUATORS = ("fanova", "ped_anova")
SEED = 0  # fANOVA's forest: the same sweep gives the same numbers


@dataclass(frozen=True)
class Importance:
    """Per evaluator, each searched parameter's share of the score's variation (summing to 1), or why none."""

    metric: str
    epoch: int | None  # the epoch the trials were scored at
    trials_used: int
    params: tuple[str, ...]
    scores: dict[str, dict[str, float]] = field(default_factory=dict)  # evaluator -> param -> importance
    reason: str = ""  # set when there are no numbers

    @property
    def available(self) -> bool:
        return bool(self.scores)


def optuna_distribution(dist: Distribution) -> BaseDistribution:
    """The declared distribution as Optuna's, over the values a trial trains (typed, on the q grid)."""
    if dist.type == "choice":
        return CategoricalDistribution([typed_value(dist, v) for v in dist.values or []])
    lower, upper = float(dist.lower), float(dist.upper)  # type: ignore[arg-type]
    log = dist.type in ("loguniform", "qloguniform")
    if TrainConfig.model_fields[dist.train_key].annotation is int or dist.type == "randint":
        high = int(upper) - 1 if dist.type == "randint" else math.floor(upper)
        return IntDistribution(math.ceil(lower), high, log=log)
    return FloatDistribution(lower, upper, log=log)


def scoring_epoch(records: list[TrialRecord]) -> int | None:
    scored = [r for r in records if r.status != ERROR and r.history]
    return min((r.epochs for r in scored), default=None)


def _scored(records: list[TrialRecord], epoch: int, metric: str) -> list[tuple[TrialRecord, float]]:
    pairs = []
    for record in records:
        if record.status == ERROR or record.epochs < epoch:
            continue
        value = record.history[epoch - 1].get(metric, math.nan)
        if math.isfinite(value):
            pairs.append((record, value))
    return pairs


def min_trials(num_params: int) -> int:
    return max(MIN_TRIALS, MIN_TRIALS_PER_PARAM * num_params)


def _evaluator(name: str) -> optuna.importance.BaseImportanceEvaluator:
    if name == "fanova":
        return optuna.importance.FanovaImportanceEvaluator(seed=SEED)
    return optuna.importance.PedAnovaImportanceEvaluator()


def param_importance(records: list[TrialRecord], space: list[Distribution], metric: str) -> Importance:
    params = tuple(dist.param for dist in space)
    epoch = scoring_epoch(records)
    pairs = _scored(records, epoch, metric) if epoch else []
    base = {"metric": metric, "epoch": epoch, "trials_used": len(pairs), "params": params}
    needed = min_trials(len(params))
    if len(pairs) < needed:
        return Importance(**base, reason=(
            f"too few trials to say which hyperparameter mattered: {len(pairs)} scored, at least {needed} needed "
            f"(max({MIN_TRIALS}, {MIN_TRIALS_PER_PARAM} per searched parameter)); no importance computed"))
    if len({value for _, value in pairs}) == 1:
        return Importance(**base, reason=f"every scored trial has the same val {metric} after epoch {epoch}: "
                                         "no variation for any hyperparameter to explain")
    distributions = {dist.param: optuna_distribution(dist) for dist in space}
    verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # no "A new study created in memory" line
    try:
        study = optuna.create_study(direction="maximize")
    finally:
        optuna.logging.set_verbosity(verbosity)
    study.add_trials([
        optuna.trial.create_trial(value=value, distributions=distributions,
                                  params={p: record.overrides[p] for p in params})
        for record, value in pairs
    ])
    scores = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        for name in EVALUATORS:
            found = optuna.importance.get_param_importances(study, evaluator=_evaluator(name), params=list(params))
            scores[name] = {p: float(found.get(p, 0.0)) for p in params}
    return Importance(**base, scores=scores)


def importance_csv(importance: Importance) -> str:
    """One row per parameter, one column per evaluator; with no numbers, the reason as a comment line."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["param", *EVALUATORS, "metric", "scored_at_epoch", "trials"])
    if not importance.available:
        out.write(f"# {importance.reason}\n")
        return out.getvalue()
    for param in importance.params:
        writer.writerow([param, *(f"{importance.scores[e][param]:.4f}" for e in EVALUATORS), importance.metric,
                         importance.epoch, importance.trials_used])
    return out.getvalue()


def plot_importance(importance: Importance) -> Figure:
    figure = Figure(figsize=(6.5, 1.0 + 0.6 * len(importance.params)), layout="constrained")
    ax = figure.subplots()
    if not importance.available:
        ax.axis("off")
        ax.text(0.5, 0.5, importance.reason, ha="center", va="center", wrap=True, fontsize="small")
        return figure
    height = 0.8 / len(EVALUATORS)
    for k, name in enumerate(EVALUATORS):
        ys = [i + k * height for i in range(len(importance.params))]
        ax.barh(ys, [importance.scores[name][p] for p in importance.params], height=height, label=name)
    ax.set_yticks([i + height * (len(EVALUATORS) - 1) / 2 for i in range(len(importance.params))],
                  list(importance.params))
    ax.invert_yaxis()
    ax.set_xlim(0, 1)
    ax.set_xlabel("share of the score's variation")
    ax.set_title(f"hyperparameter importance: val {importance.metric} after epoch {importance.epoch}, "
                 f"{importance.trials_used} trials", fontsize="medium")
    ax.legend(fontsize="small")
    return figure


def importance_metrics(importance: Importance) -> dict[str, Any]:
    """For metrics/tune.json: the numbers (or null) and what they were computed on."""
    return {
        "importance": {name: {p: round(v, 4) for p, v in values.items()} for name, values in importance.scores.items()}
        or None,
        "importance_scored_at_epoch": importance.epoch,
        "importance_trials": importance.trials_used,
    }


def importance_mlflow(importance: Importance) -> dict[str, float]:
    """Flat metric names for the MLflow parent run, e.g. ``importance_fanova.train.lr``."""
    return {f"importance_{name}.{p}": v for name, values in importance.scores.items() for p, v in values.items()}


def importance_summary(importance: Importance) -> str:
    """The lines the tune stage prints after its trial table."""
    if not importance.available:
        return f"hyperparameter importance: {importance.reason}"
    ranked = sorted(importance.params, key=lambda p: importance.scores["fanova"][p], reverse=True)
    parts = ", ".join(f"{p} {importance.scores['fanova'][p]:.2f} (PED-ANOVA {importance.scores['ped_anova'][p]:.2f})"
                      for p in ranked)
    return (f"hyperparameter importance (fANOVA, val {importance.metric} after epoch {importance.epoch}, "
            f"{importance.trials_used} trials): {parts}")
