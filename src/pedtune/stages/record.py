"""``pedtune record``: train every grid configuration at every recording seed, each epoch scored on val.

Runs are trained one after another through :func:`pedtune.engine.train.fit` and appended to
``record.folder/table.csv`` as each finishes, seed by seed (the whole grid at the first seed,
then at the next), so an interrupted recording resumes with the first run the table lacks.
``provenance.json`` beside it names what was recorded. A recording grows over sittings: more
``record.seeds`` or a grid with configurations added after the recorded ones append runs, and the
recorded rows are kept. What a recorded run was trained with may not change: other data, split,
model or epochs, or a recorded configuration whose training settings (the train section with the
configuration's values) differ, stop with an error instead of mixing two recordings. Each sitting
is logged in the provenance (commit, machine, runs, wall time).
"""

from __future__ import annotations

import platform
import subprocess
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch

from pedtune import console
from pedtune.config import StudyConfig, with_train_overrides
from pedtune.data.dataset import SampleSet
from pedtune.device import resolve_device
from pedtune.engine.train import EpochResult, fit
from pedtune.errors import NonFiniteLossError
from pedtune.io import write_json
from pedtune.replay.grid import Grid
from pedtune.replay.table import PROVENANCE_FILE, TABLE_FILE, RecordedRun, TableError, append_run, \
    read_provenance, read_runs, recording_folder
from pedtune.stages.inputs import read_inputs
from pedtune.tracking.store import git_commit

log = console.get(__name__)

# Settings a recorded run was trained with besides its configuration's values: a grown recording must
# agree on all of them. Where the data came from (source, path) does not count, as long as its
# content (the hash) and the split agree.
FIXED_KEYS = ("split", "model", "epochs", "dataset_hash")
PER_RUN = ("seed", "epochs")  # set by the recording for each run, not by the train section


def identity(provenance: dict[str, Any]) -> dict[str, Any]:
    return {"split": provenance["data"]["split"], **{key: provenance.get(key) for key in FIXED_KEYS[1:]}}


def run_settings(provenance: dict[str, Any], number: int) -> dict[str, Any]:
    """The train settings configuration ``number`` of a recording is trained with (seed and epochs aside)."""
    overrides = provenance["grid"]["configurations"][number]
    settings = {**provenance["train"], **{param.removeprefix("train."): value for param, value in overrides.items()}}
    return {key: value for key, value in settings.items() if key not in PER_RUN}


def _package_commit() -> str:
    """The commit of the checkout pedtune itself runs from (the study folder may be a copy of it)."""
    here = ["git", "-C", str(Path(__file__).resolve().parent)]
    try:
        commit = subprocess.run([*here, "rev-parse", "HEAD"], capture_output=True, text=True, check=True,
                                timeout=10).stdout.strip()
        dirty = subprocess.run([*here, "status", "--porcelain", "--untracked-files=no"], capture_output=True,
                               text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return commit + ("-dirty" if dirty else "")


def recording_params(config: StudyConfig) -> dict[str, Any]:
    """The study's params as recorded (MLflow settings left out: they change no result)."""
    params = config.model_dump(mode="json")
    del params["mlflow"]
    # Where the data lies on the recording machine is no part of the recording (its hash is): the folder's name only.
    params["data"]["local_path"] = Path(params["data"]["local_path"]).name
    return params


def provenance(config: StudyConfig, grid: Grid, dataset_hash: str, epochs: int) -> dict[str, Any]:
    params = recording_params(config)
    return {
        "data": params["data"], "model": params["model"], "train": params["train"],
        "search_space": params["tune"]["search_space"],
        "record": {key: params["record"][key] for key in ("levels", "seeds", "epochs")},
        "epochs": epochs,
        "dataset_hash": dataset_hash,
        "grid": {"params": grid.params, "configurations": grid.configurations()},
        "params": params,
        "git_commit": git_commit(),
        "pedtune_commit": _package_commit(),
        "torch": torch.__version__,
        "machine": f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} torch threads",
    }


def check_extends(folder: Path, recorded: dict[str, Any], wanted: dict[str, Any]) -> None:
    """``wanted`` may add seeds and configurations to ``recorded``; anything a recorded run depends on must agree."""
    before, now = identity(recorded), identity(wanted)
    problems = [f"{key} differs" for key in FIXED_KEYS if before[key] != now[key]]
    if recorded["grid"]["params"] != wanted["grid"]["params"]:
        problems.append(f"the searched parameters differ ({recorded['grid']['params']} recorded)")
    else:
        old, new = recorded["grid"]["configurations"], wanted["grid"]["configurations"]
        if len(new) < len(old):
            problems.append(f"the grid has {len(new)} configurations, {len(old)} are recorded")
        changed = [n for n in range(min(len(old), len(new))) if run_settings(recorded, n) != run_settings(wanted, n)]
        if changed:
            problems.append(f"recorded configuration {changed[0]} would train with other settings "
                            f"({run_settings(recorded, changed[0])} recorded)")
    dropped = [seed for seed in recorded["record"]["seeds"] if seed not in wanted["record"]["seeds"]]
    if dropped:
        problems.append(f"record.seeds leaves out recorded seeds {dropped}")
    if problems:
        raise TableError(
            f"{folder} holds a recording made with other settings ({'; '.join(problems)}): a recording only grows "
            "by seeds and configurations; set record.folder to a new folder, or delete this one to record afresh"
        )


def _extended(recorded: dict[str, Any], wanted: dict[str, Any], runs: int) -> dict[str, Any]:
    """The provenance of a grown recording: the new settings, the sittings so far kept.

    A recording from before sittings were logged becomes one sitting of its own ``runs``, its
    commits and machine kept, its wall time unknown (the table's per-epoch times still tell it).
    """
    sittings = recorded.get("sittings") or [
        {"started": None, **{key: recorded.get(key) for key in ("git_commit", "pedtune_commit", "torch", "machine")},
         "runs": runs, "wall_s": None}]
    return {**wanted, "sittings": sittings}


def _describe(overrides: dict[str, Any]) -> str:
    return ", ".join(f"{param.removeprefix('train.')}={value:g}" if isinstance(value, float)
                     else f"{param.removeprefix('train.')}={value}" for param, value in overrides.items())


def record_run(config: StudyConfig, overrides: dict[str, Any], number: int, seed: int, epochs: int,
               samples: tuple[SampleSet, SampleSet], pretrained: dict[str, torch.Tensor]) -> RecordedRun:
    """Train one grid configuration at one seed; a diverging loss ends the run, recorded as such."""
    run_config = with_train_overrides(config, {**overrides, "train.seed": seed, "train.epochs": epochs})
    history: list[dict[str, float]] = []

    def keep(result: EpochResult, _state: Any) -> None:
        history.append(dict(result.metrics))

    try:
        fit(run_config, *samples, pretrained, on_epoch_end=keep)
    except NonFiniteLossError as error:
        log.info(f"configuration {number} seed {seed} diverged at epoch {error.epoch}: recorded as diverged")
        return RecordedRun(number, seed, overrides, tuple(history), diverged_at=error.epoch)
    return RecordedRun(number, seed, overrides, tuple(history))


def run_record(config: StudyConfig) -> Path:
    """Record (or finish recording) the grid into ``record.folder``; returns the table's path."""
    resolve_device(config.train.device)
    grid = Grid.from_config(config)
    epochs = config.record.epochs or config.train.epochs
    folder = recording_folder(config.record.folder)
    inputs = read_inputs(config)
    wanted = provenance(config, grid, inputs.dataset_hash, epochs)
    recorded = read_provenance(folder)
    if recorded is None:
        if (folder / TABLE_FILE).exists():
            raise TableError(f"{folder / TABLE_FILE} exists without its {PROVENANCE_FILE}: delete it or pick another "
                             "record.folder")
    else:
        check_extends(folder, recorded, wanted)
    done = {(run.config, run.seed) for run in read_runs(folder, grid.params)}
    configurations = grid.configurations()
    plan = [(number, seed) for seed in config.record.seeds for number in range(len(configurations))]
    todo = [item for item in plan if item not in done]
    log.info(f"{len(configurations)} configurations × {len(config.record.seeds)} seeds × {epochs} epochs into "
             f"{folder}: {len(plan) - len(todo)} of {len(plan)} runs recorded, {len(todo)} to go")
    grown = {**wanted, "sittings": []} if recorded is None else _extended(recorded, wanted, len(done))
    if not todo:
        # Nothing to train, but settings that reach no recorded run (the train section's own values of
        # searched parameters: the sweeps' first trial) may have changed: the provenance says what holds now.
        if recorded is None or recorded["params"] != wanted["params"]:
            write_json(folder / PROVENANCE_FILE, grown)
        return folder / TABLE_FILE
    sitting = {"started": datetime.now(timezone.utc).isoformat(timespec="seconds"), "git_commit": wanted["git_commit"],
               "pedtune_commit": wanted["pedtune_commit"], "torch": wanted["torch"], "machine": wanted["machine"],
               "runs": 0, "wall_s": 0.0}
    grown["sittings"] = [*grown["sittings"], sitting]
    write_json(folder / PROVENANCE_FILE, grown)
    samples = (inputs.samples("train"), inputs.samples("val"))
    pretrained = inputs.pretrained()
    started = time.perf_counter()
    for count, (number, seed) in enumerate(todo, start=1):
        overrides = configurations[number]
        log.info(f"run {len(plan) - len(todo) + count}/{len(plan)}: configuration {number} "
                 f"({_describe(overrides)}), seed {seed}")
        run = record_run(config, overrides, number, seed, epochs, samples, pretrained)
        append_run(folder, run, grid.params)
        elapsed = time.perf_counter() - started
        # The sitting's tally after every run: an interrupted sitting still says what it recorded and how long it took.
        sitting.update(runs=count, wall_s=round(elapsed, 1))
        write_json(folder / PROVENANCE_FILE, grown)
        left = elapsed / count * (len(todo) - count)
        final = f"val {config.tune.metric} {run.epochs[-1][config.tune.metric]:.4f}" if run.epochs else "no epoch"
        log.info(f"configuration {number} seed {seed}: {final}; {elapsed / 60:.1f} min so far, about "
                 f"{left / 60:.0f} min to go")
    console.summary(log, f"recorded {len(plan)} runs", wrote=[folder / TABLE_FILE])
    return folder / TABLE_FILE
