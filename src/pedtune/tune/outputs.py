"""The tune stage's files: best params, per-trial table, learning curves, DVC metrics, summary."""

from __future__ import annotations

import csv
import io
import math
from pathlib import Path
from typing import Any

import yaml

from pedtune import paths
from pedtune.config import StudyConfig, with_train_overrides
from pedtune.io import atomic_path, write_json, write_text
from pedtune.tune.importance import Importance, importance_csv, importance_metrics, plot_importance
from pedtune.tune.plots import write_plots
from pedtune.tune.results import ERROR, STOPPED_EARLY, TrialRecord, best_trial

# Plot data lives outside results/tune: DVC tracks that folder as an out, and a file may
# not be both part of an out and a plot of its own.
TUNE_PLOTS = Path("plots/tune")
CURVES_CSV = TUNE_PLOTS / "curves.csv"
TRIALS_CSV = "trials.csv"
IMPORTANCE_CSV = "importance.csv"
IMPORTANCE_PNG = "importance.png"


def _number(value: float) -> str:
    return "" if math.isnan(value) else f"{value:.6g}"


def best_params_yaml(config: StudyConfig, best: TrialRecord) -> str:
    """The full ``train:`` section with the best trial's overrides, validated, ready to paste."""
    train = with_train_overrides(config, best.overrides).train.model_dump()
    header = (
        f"# Best trial {best.trial_id} of the tune stage: val {best.metric} {best.final:.4f} "
        f"after {best.epochs} epochs.\n# A drop-in for the train: section of params.yaml.\n"
    )
    return header + yaml.safe_dump(train, sort_keys=False)


def trials_csv(records: list[TrialRecord], params: list[str], metric: str) -> str:
    fields = ["trial", "trial_id", "initial", "status", "epochs", f"final_{metric}", f"best_{metric}", *params,
              "retries", "error"]
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=fields, lineterminator="\n")
    writer.writeheader()
    for number, record in enumerate(records, start=1):
        writer.writerow(
            {
                "trial": number,
                "trial_id": record.trial_id,
                "initial": str(record.is_initial).lower(),
                "status": record.status,
                "epochs": record.epochs,
                f"final_{metric}": _number(record.final),
                f"best_{metric}": _number(record.best),
                **{param: record.overrides[param] for param in params},
                "retries": record.retries,
                "error": record.error,
            }
        )
    return out.getvalue()


def curves_csv(records: list[TrialRecord]) -> str:
    """Long format, one row per trial-epoch, for ``dvc plots`` (x: epoch)."""
    fields = ["trial_id", "epoch", "bbox_mAP", "segm_mAP", "train_loss"]
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=fields, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for record in records:
        for row in record.history:
            writer.writerow({"trial_id": record.trial_id, **{k: f"{v:.6g}" for k, v in row.items()}})
    return out.getvalue()


def _json_number(value: float) -> float | None:
    return None if math.isnan(value) else round(value, 6)


def tune_metrics(records: list[TrialRecord], best: TrialRecord, wall_time_s: float,
                 importance: Importance | None = None) -> dict[str, Any]:
    """metrics/tune.json: comparable across sweeps with ``dvc metrics diff``."""
    initial = next((r for r in records if r.is_initial), None)
    # The best of the searcher's own proposals, by best_trial's rule: when the initial configuration
    # wins, the evaluate report quotes this gap as how close the search came.
    searched = best_trial([r for r in records if not r.is_initial])
    return {
        f"best_{best.metric}": _json_number(best.final),
        f"initial_{best.metric}": _json_number(initial.final) if initial else None,
        f"best_searched_{best.metric}": _json_number(searched.final) if searched else None,
        "num_trials": len(records),
        "num_errored": sum(r.status == ERROR for r in records),
        "num_stopped_early": sum(r.status == STOPPED_EARLY for r in records),
        # Trials restarted from their last checkpoint after a failure (a lost worker or node).
        "num_retried": sum(r.retries > 0 for r in records),
        "trial_epochs": sum(r.epochs for r in records),
        # Both add up every run of the stage on this sweep (interrupted, resumed, re-read):
        # training time summed over trials, and the stage's wall time.
        "trial_time_s": round(sum(r.time_s for r in records), 1),
        "wall_time_s": round(wall_time_s, 1),
        **(importance_metrics(importance) if importance is not None else {}),
    }


def _short(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def summary_table(records: list[TrialRecord], best: TrialRecord | None, params: list[str], metric: str) -> str:
    """A fixed-width table of every trial; the initial and the best configuration are marked."""
    header = ["#", "trial_id", "status", "epochs", f"final {metric}", f"best {metric}", *params, "note"]
    rows = [header]
    for number, record in enumerate(records, start=1):
        notes = [label for label, hit in (("initial", record.is_initial), ("BEST", record is best)) if hit]
        if record.retries:
            notes.append(f"retried {record.retries}x from its checkpoint")
        error_lines = record.error.strip().splitlines()
        if error_lines:  # the first line; trials.csv holds the whole message
            first = error_lines[0]
            notes.append(first if len(first) <= 100 else first[:99] + "…")
        rows.append(
            [str(number), record.trial_id, record.status, str(record.epochs), _number(record.final),
             _number(record.best), *(_short(record.overrides[p]) for p in params), ", ".join(notes)]
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip() for row in rows]
    lines.insert(1, "  ".join("-" * width for width in widths))
    return "\n".join(lines)


def write_outputs(config: StudyConfig, records: list[TrialRecord], best: TrialRecord, wall_time_s: float,
                  importance: Importance | None = None) -> None:
    """Write every output of the stage; ``results/tune`` is swapped in whole."""
    params = [dist.param for dist in config.tune.search_space]
    with atomic_path(paths.TUNE_DIR) as folder:
        folder.mkdir()
        (folder / paths.BEST_PARAMS.name).write_text(best_params_yaml(config, best), encoding="utf-8")
        (folder / TRIALS_CSV).write_text(trials_csv(records, params, config.tune.metric), encoding="utf-8")
        write_plots(records, config, folder, best)
        if importance is not None:
            (folder / IMPORTANCE_CSV).write_text(importance_csv(importance), encoding="utf-8")
            plot_importance(importance).savefig(folder / IMPORTANCE_PNG, dpi=110)
    write_text(CURVES_CSV, curves_csv(records))
    write_json(paths.TUNE_METRICS, tune_metrics(records, best, wall_time_s, importance))
