"""PNG plots of a finished sweep (matplotlib's Agg canvas: no display, no global pyplot state)."""

from __future__ import annotations

import math
from pathlib import Path

from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator, NullFormatter

from pedtune.config import StudyConfig
from pedtune.config.schema import Distribution
from pedtune.tune.results import ERROR, STOPPED_EARLY, TrialRecord, best_trial
from pedtune.tune.space import typed_value

STATUS_STYLE = {  # status -> (colour, marker, legend label)
    "COMPLETED": ("tab:blue", "o", "completed"),
    STOPPED_EARLY: ("tab:orange", "v", "stopped early (ASHA)"),
    ERROR: ("tab:red", "x", "error"),
}


def _score(record: TrialRecord) -> float:
    # A trial that failed before its first epoch has no score; it is drawn at 0.
    return record.final if math.isfinite(record.final) else 0.0


def _mark_initial_and_best(ax: Axes, x: float, record: TrialRecord, best: TrialRecord | None) -> None:
    if record.is_initial:
        ax.scatter([x], [_score(record)], s=180, facecolors="none", edgecolors="black", linewidths=1.5,
                   label="initial config", zorder=4)
    if record is best:
        ax.scatter([x], [_score(record)], s=260, marker="*", color="gold", edgecolors="black", label="best",
                   zorder=5)


def _by_status(ax: Axes, points: list[tuple[float, TrialRecord]]) -> None:
    for status, (colour, marker, label) in STATUS_STYLE.items():
        chosen = [(x, r) for x, r in points if r.status == status]
        if chosen:
            ax.scatter([x for x, _ in chosen], [_score(r) for _, r in chosen], color=colour, marker=marker,
                       label=label, zorder=3)


def _legend(ax: Axes) -> None:
    handles, labels = ax.get_legend_handles_labels()
    unique = dict(zip(labels, handles))  # one entry per label
    ax.legend(unique.values(), unique.keys(), fontsize="small")


def _param_axis(ax: Axes, dist: Distribution, records: list[TrialRecord]) -> list[float]:
    """x positions of the trials on this param's axis (category index for a choice)."""
    values = [r.overrides[dist.param] for r in records]
    if dist.type == "choice":
        declared = list(dist.values or [])
        # A trial holds the train field's type (choice [0, 10] on a float field trains 10.0).
        typed = [typed_value(dist, v) for v in declared]
        ax.set_xticks(range(len(declared)), [str(v) for v in declared])
        ax.set_xlim(-0.5, len(declared) - 0.5)
        return [float(typed.index(v)) for v in values]
    # The whole declared range, so the plot also shows which parts the searcher explored.
    lower, upper = float(dist.lower), float(dist.upper)  # type: ignore[arg-type]
    if dist.type in ("loguniform", "qloguniform"):
        ax.set_xscale("log")
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.set_xlim(lower / 1.2, upper * 1.2)
    else:
        pad = 0.03 * (upper - lower)
        ax.set_xlim(lower - pad, upper + pad)
    return [float(v) for v in values]


def plot_metric_vs_params(records: list[TrialRecord], config: StudyConfig, best: TrialRecord | None) -> Figure:
    space = config.tune.search_space
    figure = Figure(figsize=(4.5 * len(space), 4), layout="constrained")
    for ax, dist in zip(figure.subplots(1, len(space), squeeze=False)[0], space):
        xs = _param_axis(ax, dist, records)
        _by_status(ax, list(zip(xs, records)))
        for x, record in zip(xs, records):
            _mark_initial_and_best(ax, x, record, best)
        ax.set_xlabel(dist.param)
        ax.set_ylabel(f"final val {config.tune.metric}")
        ax.grid(alpha=0.3)
    _legend(figure.axes[0])
    figure.suptitle(f"val {config.tune.metric} vs each hyperparameter")
    return figure


def _final_of(record: TrialRecord | None) -> float:
    return math.nan if record is None else record.final


def plot_best_so_far(records: list[TrialRecord], config: StudyConfig, best: TrialRecord | None) -> Figure:
    figure = Figure(figsize=(7, 4), layout="constrained")
    ax = figure.subplots()
    numbers = list(range(1, len(records) + 1))
    _by_status(ax, list(zip(numbers, records)))
    for number, record in zip(numbers, records):
        _mark_initial_and_best(ax, number, record, best)
    # Picked as the stage picks its best trial (best_trial), among the trials proposed so far.
    best_so_far = [_final_of(best_trial(records[:n])) for n in numbers]
    ax.step(numbers, best_so_far, where="post", color="black", alpha=0.6, label="best so far")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("trial (in the order proposed)")
    ax.set_ylabel(f"final val {config.tune.metric}")
    ax.grid(alpha=0.3)
    _legend(ax)
    return figure


def asha_rungs(config: StudyConfig) -> list[int]:
    """Epochs at which ASHA compares trials: grace_period * reduction_factor**k below max_t.

    Ray judges a trial at its first epoch at or past a milestone, so a fractional one
    (reduction factor 2.5: 2, 5, 12.5) is drawn at the next whole epoch.
    """
    if config.tune.scheduler != "asha":
        return []
    rungs, epoch = [], float(config.tune.asha.grace_period)
    while epoch < config.asha_max_t:
        if math.ceil(epoch) not in rungs:
            rungs.append(math.ceil(epoch))
        epoch *= config.tune.asha.reduction_factor
    return rungs


def _curve_style(record: TrialRecord, best: TrialRecord | None) -> tuple[str, float, str | None]:
    """(colour, width, legend label) of a trial's line: the best and the initial config stand out."""
    if record is best:
        return "gold", 2.5, "best"
    if record.is_initial:
        return "black", 2.0, "initial config"
    return STATUS_STYLE[record.status][0], 1.0, None


def plot_learning_curves(records: list[TrialRecord], config: StudyConfig, best: TrialRecord | None) -> Figure:
    figure = Figure(figsize=(7, 4.5), layout="constrained")
    ax = figure.subplots()
    rungs = asha_rungs(config)
    for rung in rungs:
        ax.axvline(rung, color="grey", linestyle=":", alpha=0.7)
    for record in records:
        if not record.history:
            continue
        epochs = [row["epoch"] for row in record.history]
        colour, width, label = _curve_style(record, best)
        ax.plot(epochs, record.scores, color=colour, linewidth=width, alpha=0.8, label=label,
                linestyle="--" if record.status == ERROR else "-")
        # The last point shows how the trial ended: completed, stopped by ASHA, or failed.
        end_colour, marker, end_label = STATUS_STYLE[record.status]
        ax.scatter(epochs[-1:], record.scores[-1:], color=end_colour, marker=marker, label=end_label, zorder=3)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("epoch (dotted: ASHA rungs)" if rungs else "epoch")
    ax.set_ylabel(f"val {config.tune.metric}")
    ax.set_title("learning curves of the trials")
    ax.grid(alpha=0.3)
    _legend(ax)
    return figure


PLOTS = {
    "metric_vs_params.png": plot_metric_vs_params,
    "best_so_far.png": plot_best_so_far,
    "learning_curves.png": plot_learning_curves,
}


def write_plots(records: list[TrialRecord], config: StudyConfig, folder: Path, best: TrialRecord | None) -> None:
    for name, plot in PLOTS.items():
        plot(records, config, best).savefig(folder / name, dpi=110)
