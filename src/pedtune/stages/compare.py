"""``pedtune compare``: replayed sweeps per variant (searcher × scheduler × budget) over many searcher seeds.

The replay takes the recorded problem (data, model, train section, search space, epochs) from
the table's provenance and the sweep settings (ASHA's grace period and reduction factor,
``max_concurrent``, ``n_initial_points``, the metric) from the current params.yaml's ``tune``
section; each variant then sets the searcher, the scheduler, the budget and the seed.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from ray.util import ActorPool

from pedtune import console
from pedtune.config import ConfigError, StudyConfig, validate
from pedtune.replay.grid import Grid
from pedtune.replay.real import load_real_sweeps
from pedtune.replay.sweep import Sweep, replay_session, sweep_runners
from pedtune.replay.table import Table, load_table, recording_folder
from pedtune.replay.variant import Variant
from pedtune.replay.verdict import write_comparison
from pedtune.units import duration

log = console.get(__name__)


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


def run_variants(base: StudyConfig, table: Table, grid: Grid, seeds: int, parallel: int) -> dict[Variant, list[Sweep]]:
    """Every variant's sweeps, seeds 0..seeds-1, ``parallel`` at a time, inside one ``ray.init``."""
    # Checked before the first sweep: a budget the searcher settings do not fit fails at once.
    planned = [(variant, sweep_config(base, variant, seed)) for variant in variants(base) for seed in range(seeds)]
    results: dict[Variant, list[Sweep]] = {variant: [] for variant in variants(base)}
    with replay_session(parallel * base.tune.max_concurrent) as storage:
        runners = sweep_runners(min(parallel, len(planned)), table, grid, base.tune.metric, storage)
        pool = ActorPool(runners)
        started = time.perf_counter()
        # In plan order, so each variant's sweeps come in seed order whatever finishes first.
        sweeps = pool.map(lambda runner, config: runner.run.remote(config), [config for _, config in planned])
        for done, ((variant, _), sweep) in enumerate(zip(planned, sweeps), start=1):
            results[variant].append(sweep)
            if done % PROGRESS_EVERY == 0 or done == len(planned):
                elapsed = time.perf_counter() - started
                log.info(f"{done}/{len(planned)} sweeps in {duration(elapsed)}, about "
                         f"{duration(elapsed / done * (len(planned) - done))} to go")
    return results


def run_compare(config: StudyConfig) -> Path:
    """Replay every variant of ``config.compare`` on the table in ``record.folder``; write the verdict."""
    folder = recording_folder(config.record.folder)
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
    real = load_real_sweeps(folder, base, grid)  # read first: a malformed one fails before the sweeps
    started = time.perf_counter()
    parallel = config.compare.parallel or os.cpu_count() or 1
    log.info(f"{len(variants(base))} variants × {config.compare.seeds} seeds on {folder} ({table.configs} "
             f"configurations × {len(table.seeds)} seeds × {table.epochs} epochs), {parallel} sweeps at a time")
    sweeps = run_variants(base, table, grid, config.compare.seeds, parallel)
    output = Path(config.compare.output)
    write_comparison(output, base, table, provenance, folder, sweeps, time.perf_counter() - started, real)
    console.summary(log, f"{sum(len(runs) for runs in sweeps.values())} replayed sweeps in "
                         f"{duration(time.perf_counter() - started)}", wrote=[output / "verdict.md"])
    return output
