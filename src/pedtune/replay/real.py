"""Real sweeps beside their replay: does a real tune stage land inside the replay's distribution?

A real sweep is the tune stage run for real on the recorded problem (the same split, model, train
section, search space and epochs) with one searcher, scheduler and seed. Its folder under the
table's ``real/`` holds the params.yaml it ran with and the ``trials.csv`` it wrote to
``results/tune``. Its pick (the trial the stage picked, mapped to the grid configuration whose bins
hold it), the pick's real score and its trial-epochs are set against the replay's sweeps of the
same variant.
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass
from pathlib import Path

from pedtune.replay.grid import Grid
from pedtune.replay.table import TableError, typed_value
from pedtune.replay.variant import Variant
from pedtune.config import StudyConfig, load_config
from pedtune.tune.outputs import TRIALS_CSV
from pedtune.tune.results import TrialRecord, best_trial

REAL_FOLDER = "real"


@dataclass(frozen=True)
class RealSweep:
    name: str  # its folder under real/
    variant: Variant
    seed: int
    picked: int  # the grid configuration of the picked trial; -1 if no trial finished
    picked_score: float  # the picked trial's final val metric, as the real sweep measured it
    trial_epochs: int


def _same_problem(path: Path, config: StudyConfig, base: StudyConfig) -> None:
    """The real sweep must have searched the recorded problem with the replay's sweep settings."""
    pairs = {
        "data.split": (config.data.split, base.data.split), "model": (config.model, base.model),
        "train": (config.train, base.train), "tune.search_space": (config.tune.search_space, base.tune.search_space),
        "tune.asha.grace_period": (config.tune.asha.grace_period, base.tune.asha.grace_period),
        "tune.asha.reduction_factor": (config.tune.asha.reduction_factor, base.tune.asha.reduction_factor),
        "tune.max_concurrent": (config.tune.max_concurrent, base.tune.max_concurrent),
        "tune.n_initial_points": (config.tune.n_initial_points, base.tune.n_initial_points),
    }
    differing = [name for name, (real, replayed) in pairs.items() if real != replayed]
    if differing:
        raise TableError(f"{path}: this real sweep ran another problem or other sweep settings than the replay "
                         f"({', '.join(differing)} differ)")


def _records(path: Path, config: StudyConfig) -> list[TrialRecord]:
    """The trials of a real sweep's trials.csv, as far as picking the best needs them."""
    metric = config.tune.metric
    params = [dist.param for dist in config.tune.search_space]
    with path.open(newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    missing = {"trial_id", "initial", "status", "epochs", f"final_{metric}", *params} - set(rows[0] if rows else {})
    if not rows or missing:
        raise TableError(f"{path}: not a trials.csv of the tune stage (missing {sorted(missing) or 'rows'})")
    records = []
    for row in rows:
        epochs = int(row["epochs"])
        final = float(row[f"final_{metric}"]) if row[f"final_{metric}"] else math.nan
        # Only the final score matters for the pick; the earlier epochs' scores are not in trials.csv.
        history = tuple({"epoch": e, metric: final if e == epochs else math.nan} for e in range(1, epochs + 1))
        records.append(TrialRecord(trial_id=row["trial_id"], overrides={p: typed_value(row[p]) for p in params},
                                   status=row["status"], is_initial=row["initial"] == "true", metric=metric,
                                   history=history, time_s=0.0))
    return records


def load_real_sweeps(table_folder: Path, base: StudyConfig, grid: Grid) -> list[RealSweep]:
    """Every real sweep under ``table_folder``/real/ (none if that folder does not exist)."""
    sweeps = []
    for params_file in sorted((table_folder / REAL_FOLDER).glob("*/params.yaml")):
        config = load_config(params_file)
        _same_problem(params_file, config, base)
        trials = params_file.parent / TRIALS_CSV
        if not trials.exists():
            raise TableError(f"{trials} not found: copy the real sweep's results/tune/{TRIALS_CSV} next to its params")
        records = _records(trials, config)
        best = best_trial(records)
        sweeps.append(RealSweep(
            name=params_file.parent.name,
            variant=Variant(config.tune.searcher, config.tune.scheduler, config.tune.num_samples),
            seed=config.tune.seed,
            picked=-1 if best is None else grid.index_of(best.overrides),
            picked_score=math.nan if best is None else best.final,
            trial_epochs=sum(record.epochs for record in records),
        ))
    return sweeps
