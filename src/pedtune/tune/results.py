"""What a finished sweep produced, per trial, read back from Ray Tune's ResultGrid."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
from ray.tune import ExperimentAnalysis, Result, ResultGrid
from ray.tune.experiment import Trial
from ray.tune.result import TIME_TOTAL_S

from pedtune.config import StudyConfig
from pedtune.tune.space import decode_sample, initial_point
from pedtune.tune.storage import SweepStorage

COMPLETED, STOPPED_EARLY, ERROR = "COMPLETED", "STOPPED_EARLY", "ERROR"
CURVE_FIELDS = ("bbox_mAP", "segm_mAP", "train_loss")


@dataclass(frozen=True)
class TrialRecord:
    trial_id: str
    overrides: dict[str, Any]  # train.* values the trial trained with (quantized, typed)
    status: str  # COMPLETED | STOPPED_EARLY (by ASHA) | ERROR
    is_initial: bool
    metric: str
    history: tuple[dict[str, float], ...]  # per epoch: "epoch" and CURVE_FIELDS
    time_s: float  # seconds the trial trained, over all its (resumed) runs
    error: str = ""
    retries: int = 0  # times the trial failed (its worker or node lost) and Tune restarted it from a checkpoint

    @property
    def epochs(self) -> int:
        return len(self.history)

    @property
    def scores(self) -> list[float]:
        return [row[self.metric] for row in self.history]

    @property
    def final(self) -> float:
        return self.scores[-1] if self.history else math.nan

    @property
    def best(self) -> float:
        return max(self.scores) if self.history else math.nan


def trial_dirname(trial: Trial) -> str:
    """``trial_<n>_<trial id>``: n is the searcher's proposal counter (Ray keeps it in the tag).

    Short, unlike Ray's default that spells out the config, and it keeps the proposal order,
    which a restored experiment does not list its trials in.
    """
    number = int(trial.experiment_tag.partition("_")[0])
    return f"trial_{number:04d}_{trial.trial_id}"


def proposal_number(result: Result) -> int:
    return int(Path(result.path).name.split("_")[1])


def saved_trials(storage: SweepStorage, experiment: str) -> list[Trial]:
    """The trials as the experiment state Tune saved last (on the way out of ``Tuner.fit``) holds them."""
    return ExperimentAnalysis(storage.path(experiment), storage_filesystem=storage.filesystem).trials


def sweep_finished(trials: list[Trial], num_samples: int) -> bool:
    """False after an interrupt (Ctrl-C), when Tuner.fit returns with trials left to run.

    Read from the saved experiment state (:func:`saved_trials`): a trial restored as finished
    has lost the ``done`` flag of its last result.
    """
    return len(trials) >= num_samples and all(t.status in (Trial.TERMINATED, Trial.ERROR) for t in trials)


def trial_retries(trials: list[Trial]) -> dict[str, int]:
    """Per trial id, how often Tune restarted the trial after a failure (a trial that ended ERROR failed once more)."""
    return {trial.trial_id: trial.num_failures - (trial.status == Trial.ERROR) for trial in trials}


def _sample(result: Result) -> dict[str, Any]:
    # A trial that failed before its first report has no config in its result; the
    # params.json Tune wrote into the trial folder when it started always has it.
    if result.config:
        return result.config
    with result.filesystem.open_input_stream(f"{result.path}/params.json") as stream:
        return json.loads(stream.read().decode("utf-8"))


def _history(frame: pd.DataFrame | None) -> tuple[dict[str, float], ...]:
    if frame is None or frame.empty or "epoch" not in frame:
        return ()
    # An epoch re-run after an interrupted driver appears twice; the later run counts.
    frame = frame.dropna(subset=["epoch"]).drop_duplicates("epoch", keep="last").sort_values("epoch")
    fields = [f for f in CURVE_FIELDS if f in frame]
    return tuple(
        {"epoch": int(row["epoch"]), **{f: float(row[f]) for f in fields}} for _, row in frame.iterrows()
    )


def _status(result: Result, epochs_run: int, epochs_planned: int) -> str:
    if result.error is not None:
        return ERROR
    return STOPPED_EARLY if epochs_run < epochs_planned else COMPLETED


def _error_line(result: Result) -> str:
    if result.error is None:
        return ""
    lines = [line for line in str(result.error).strip().splitlines() if line.strip()]
    return lines[-1][:300] if lines else type(result.error).__name__


def collect_trials(grid: ResultGrid, config: StudyConfig, failures: Mapping[str, int] | None = None) -> list[TrialRecord]:
    """One record per trial, in the order the searcher proposed them; ``failures``: per trial id, how often it was retried."""
    initial = initial_point(config)
    horizon = config.asha_max_t if config.tune.scheduler == "asha" else None
    results = sorted(grid, key=proposal_number)
    samples = [decode_sample(_sample(result), config.tune.search_space) for result in results]
    # The initial config is the searcher's first point; a later trial may propose it again.
    initial_index = next((i for i, overrides in enumerate(samples) if overrides == initial), None)
    records = []
    for index, (result, overrides) in enumerate(zip(results, samples)):
        history = _history(result.metrics_dataframe)
        planned = int(overrides.get("train.epochs", config.train.epochs))
        if horizon is not None:
            planned = min(planned, horizon)
        records.append(
            TrialRecord(
                trial_id=str(result.metrics["trial_id"]),
                overrides=overrides,
                status=_status(result, len(history), planned),
                is_initial=index == initial_index,
                metric=config.tune.metric,
                history=history,
                time_s=float(result.metrics.get(TIME_TOTAL_S) or 0.0),
                error=_error_line(result),
                retries=(failures or {}).get(str(result.metrics["trial_id"]), 0),
            )
        )
    return records


def best_trial(records: list[TrialRecord]) -> TrialRecord | None:
    """The trial with the highest final val metric (the earliest on a tie); None if none scored.

    Only trials that ran their whole schedule compete: a trial ASHA stopped was judged at a
    rung, and its score there is not comparable with others' scores after all epochs (the
    trials that beat it at that rung may lose a little by the end). If every trial that
    finished failed, the stopped trials that got furthest compete instead.
    """
    scored = [r for r in records if r.status != ERROR and math.isfinite(r.final)]
    if not scored:
        return None
    finished = [r for r in scored if r.status == COMPLETED]
    if not finished:
        furthest = max(r.epochs for r in scored)
        finished = [r for r in scored if r.epochs == furthest]
    return max(finished, key=lambda r: r.final)
