"""The recorded table (``table.csv``: one row per configuration, seed and epoch) and its provenance.

A run that diverged keeps the rows of the epochs it finished and gets one more, at the epoch
its loss went non-finite, with status ``diverged`` and no scores: a replayed trial of it fails
there, as the real trial would.
"""

from __future__ import annotations

import csv
import io
import json
import math
import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pedtune.errors import PedtuneError
from pedtune.io import write_text

TABLE_FILE = "table.csv"
PROVENANCE_FILE = "provenance.json"
# Where recordings lived before they moved to recordings/ (record.folder's old default).
FORMER_FOLDERS = {"recordings/recorded": "benchmarks/recorded"}
OK, DIVERGED = "ok", "diverged"
SCORE_FIELDS = ("bbox_mAP", "bbox_AP50", "bbox_AP75", "segm_mAP", "segm_AP50", "segm_AP75")
TIME_FIELDS = ("train_loss", "epoch_time_s", "eval_time_s")


class TableError(PedtuneError):
    """The recorded table is missing, malformed, or was recorded with other settings."""


@dataclass(frozen=True)
class RecordedRun:
    """One configuration trained with one seed: its per-epoch scores, and where it diverged (if it did)."""

    config: int
    seed: int
    overrides: dict[str, Any]
    epochs: tuple[dict[str, float], ...]  # per epoch: SCORE_FIELDS and TIME_FIELDS
    diverged_at: int | None = None

    def score(self, metric: str, epoch: int) -> float:
        return self.epochs[epoch - 1][metric]

    def final(self, metric: str, horizon: int) -> float:
        """The score after ``horizon`` epochs; 0 for a run that diverged before (its model is unusable)."""
        return self.epochs[horizon - 1][metric] if len(self.epochs) >= horizon else 0.0


def recording_folder(folder: str) -> Path:
    """``record.folder`` as a path; stops when a recording is left at the folder's former default."""
    path, former = Path(folder), FORMER_FOLDERS.get(Path(folder).as_posix())
    if former and not path.exists() and (Path(former) / TABLE_FILE).exists():
        raise TableError(f"{former} holds a recording, but record.folder's default is now {folder}: move it there "
                         f"(git mv {former} {folder}) or set record.folder: {former} in params.yaml")
    return path


def header(params: list[str]) -> list[str]:
    return ["config", "seed", "epoch", *params, "status", *SCORE_FIELDS, *TIME_FIELDS]


def run_rows(run: RecordedRun, params: list[str]) -> str:
    """The CSV rows (no header) of one run."""
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=header(params), lineterminator="\n")
    base = {"config": run.config, "seed": run.seed, **{p: run.overrides[p] for p in params}}
    for number, row in enumerate(run.epochs, start=1):
        writer.writerow({**base, "epoch": number, "status": OK,
                         **{k: f"{row[k]:.6g}" for k in (*SCORE_FIELDS, *TIME_FIELDS) if k in row}})
    if run.diverged_at is not None:
        writer.writerow({**base, "epoch": run.diverged_at, "status": DIVERGED})
    return out.getvalue()


def append_run(folder: Path, run: RecordedRun, params: list[str]) -> None:
    """Add one finished run to ``table.csv`` (rewritten whole, so an interruption never leaves half a run)."""
    path = folder / TABLE_FILE
    text = path.read_text(encoding="utf-8") if path.exists() else ",".join(header(params)) + "\n"
    write_text(path, text + run_rows(run, params))


def typed_value(text: str) -> Any:
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return {"True": True, "False": False}.get(text, text)


def read_runs(folder: Path, params: list[str]) -> list[RecordedRun]:
    """The runs in ``table.csv`` (none if it does not exist yet)."""
    path = folder / TABLE_FILE
    if not path.exists():
        return []
    with path.open(newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        if reader.fieldnames != header(params):
            raise TableError(f"{path} has columns {reader.fieldnames}, expected {header(params)}")
        grouped: dict[tuple[int, int], list[dict[str, str]]] = {}
        for row in reader:
            grouped.setdefault((int(row["config"]), int(row["seed"])), []).append(row)
    runs = []
    for (config, seed), rows in grouped.items():
        trained = [r for r in rows if r["status"] == OK]
        diverged = [int(r["epoch"]) for r in rows if r["status"] == DIVERGED]
        if [int(r["epoch"]) for r in trained] != list(range(1, len(trained) + 1)):
            raise TableError(f"{path}: configuration {config}, seed {seed} does not list its epochs 1, 2, ... in order")
        runs.append(RecordedRun(
            config=config, seed=seed, overrides={p: typed_value(rows[0][p]) for p in params},
            epochs=tuple({k: float(r[k]) for k in (*SCORE_FIELDS, *TIME_FIELDS) if r.get(k)} for r in trained),
            diverged_at=diverged[0] if diverged else None,
        ))
    return runs


def read_provenance(folder: Path) -> dict[str, Any] | None:
    path = folder / PROVENANCE_FILE
    if not path.exists():
        return None
    return json.loads(path.read_text(encoding="utf-8"))


@dataclass(frozen=True)
class Table:
    """A complete recording, read for replay: every configuration's runs over the same seeds and epochs."""

    runs: dict[tuple[int, int], RecordedRun]  # (config, seed) -> run
    configs: int
    seeds: tuple[int, ...]
    epochs: int
    params: tuple[str, ...]

    def run(self, config: int, seed: int) -> RecordedRun:
        return self.runs[(config, seed)]

    def overrides(self, config: int) -> dict[str, Any]:
        return self.runs[(config, self.seeds[0])].overrides

    def true_score(self, config: int, metric: str) -> float:
        """A configuration's worth: its final score averaged over the recorded seeds."""
        return statistics.fmean(self.run(config, seed).final(metric, self.epochs) for seed in self.seeds)

    def best_config(self, metric: str) -> int:
        scores = [self.true_score(c, metric) for c in range(self.configs)]
        return max(range(self.configs), key=lambda c: scores[c])

    def seed_spread(self, metric: str) -> float:
        """The pooled standard deviation of a final score between seeds of one configuration."""
        variances = [statistics.variance([self.run(c, s).final(metric, self.epochs) for s in self.seeds])
                     for c in range(self.configs)]
        return math.sqrt(statistics.fmean(variances))


def load_table(folder: Path) -> tuple[Table, dict[str, Any]]:
    """The recorded table and its provenance, checked complete: every configuration at every seed."""
    provenance = read_provenance(folder)
    if provenance is None:
        raise TableError(f"{folder / PROVENANCE_FILE} not found: record a benchmark with `pedtune record` first")
    params = list(provenance["grid"]["params"])
    configs = len(provenance["grid"]["configurations"])
    seeds = tuple(provenance["params"]["record"]["seeds"])
    epochs = int(provenance["epochs"])
    runs = {(r.config, r.seed): r for r in read_runs(folder, params)}
    missing = [(c, s) for s in seeds for c in range(configs) if (c, s) not in runs]
    if missing:
        raise TableError(
            f"{folder / TABLE_FILE} holds {len(runs)} of {configs * len(seeds)} runs (configurations × seeds); "
            f"run `pedtune record` again to finish it (next missing: configuration {missing[0][0]}, seed {missing[0][1]})"
        )
    short = [key for key, run in runs.items() if run.diverged_at is None and len(run.epochs) < epochs]
    if short:
        raise TableError(f"{folder / TABLE_FILE}: configuration {short[0][0]}, seed {short[0][1]} has fewer than "
                         f"{epochs} epochs")
    return Table(runs, configs, seeds, epochs, tuple(params)), provenance
