"""``pedtune compare``: replayed sweeps per variant (searcher × scheduler × budget) over many searcher seeds.

The replay takes the recorded problem (data, model, train section, search space, epochs) from
the table's provenance and the sweep settings (ASHA's grace period and reduction factor,
``max_concurrent``, ``n_initial_points``, the metric) from the current params.yaml's ``tune``
section; each variant then sets the searcher, the scheduler, the budget and the seed.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pedtune import console
from pedtune.benchmark.grid import Grid
from pedtune.benchmark.replay import Sweep, replay_session, replay_trainable, run_sweep
from pedtune.benchmark.table import Table, load_table
from pedtune.benchmark.verdict import write_comparison
from pedtune.config import ConfigError, StudyConfig, validate

log = console.get(__name__)


@dataclass(frozen=True)
class Variant:
    searcher: str
    scheduler: str
    budget: int

    @property
    def label(self) -> str:
        return f"{self.searcher}+{self.scheduler}, {self.budget} trials"


def replay_config(config: StudyConfig, provenance: dict[str, Any]) -> StudyConfig:
    """The recorded study (its record section too) with this params.yaml's sweep settings; trials last the
    recorded epochs."""
    raw = dict(provenance["params"])
    tune_section = config.tune.model_dump(mode="json")
    tune_section["search_space"] = provenance["search_space"]
    tune_section["asha"] = {**tune_section["asha"], "max_t": None}
    raw.update(tune=tune_section, train={**raw["train"], "epochs": int(provenance["epochs"])},
               mlflow=config.mlflow.model_dump(mode="json"), compare=config.compare.model_dump(mode="json"))
    return validate(raw, source="the recording's params with this params.yaml's tune section")


def variants(config: StudyConfig) -> list[Variant]:
    budgets = config.compare.budgets or [config.tune.num_samples]
    return [Variant(searcher, scheduler, budget) for budget in budgets for scheduler in config.compare.schedulers
            for searcher in config.compare.searchers]


def sweep_config(base: StudyConfig, variant: Variant, seed: int) -> StudyConfig:
    raw = base.model_dump(mode="json")
    raw["tune"].update(searcher=variant.searcher, scheduler=variant.scheduler, num_samples=variant.budget, seed=seed)
    return validate(raw, source=f"the replay of {variant.label}")


PROGRESS_EVERY = 10  # sweeps between progress lines


def run_variants(base: StudyConfig, table: Table, grid: Grid, seeds: int) -> dict[Variant, list[Sweep]]:
    """Every variant's sweeps, seeds 0..seeds-1, one after another inside one ``ray.init``.

    (Not side by side in threads: Tune's trainable registry is not thread-safe.)
    """
    # Checked before the first sweep: a budget the searcher settings do not fit fails at once.
    planned = [(variant, sweep_config(base, variant, seed)) for variant in variants(base) for seed in range(seeds)]
    results: dict[Variant, list[Sweep]] = {variant: [] for variant in variants(base)}
    with replay_session() as storage:
        trainable = replay_trainable(table, grid, base.tune.metric)
        started = time.perf_counter()
        for done, (variant, config) in enumerate(planned, start=1):
            results[variant].append(run_sweep(config, trainable, storage))
            if done % PROGRESS_EVERY == 0 or done == len(planned):
                elapsed = time.perf_counter() - started
                log.info(f"{done}/{len(planned)} sweeps in {console.duration(elapsed)}, about "
                         f"{console.duration(elapsed / done * (len(planned) - done))} to go")
    return results


def run_compare(config: StudyConfig) -> Path:
    """Replay every variant of ``config.compare`` on the table in ``record.folder``; write the verdict."""
    folder = Path(config.record.folder)
    table, provenance = load_table(folder)
    base = replay_config(config, provenance)
    if [dist.model_dump(mode="json") for dist in config.tune.search_space] != provenance["search_space"]:
        log.info("params.yaml's tune.search_space differs from the recording's: the replay searches the recorded "
                 "one")
    grid = Grid.from_config(base)
    if grid.configurations() != provenance["grid"]["configurations"]:
        # The map from proposals to configurations must be the one the table was recorded on.
        raise ConfigError(f"{folder}: the recorded grid differs from the one this pedtune computes from the "
                          "recording's params (recorded by another version?)")
    started = time.perf_counter()
    log.info(f"{len(variants(base))} variants × {config.compare.seeds} seeds on {folder} ({table.configs} "
             f"configurations × {len(table.seeds)} seeds × {table.epochs} epochs)")
    sweeps = run_variants(base, table, grid, config.compare.seeds)
    output = Path(config.compare.output)
    write_comparison(output, base, table, provenance, folder, sweeps, time.perf_counter() - started)
    console.summary(log, f"{sum(len(runs) for runs in sweeps.values())} replayed sweeps in "
                         f"{console.duration(time.perf_counter() - started)}", wrote=[output / "verdict.md"])
    return output
