"""The verdict's statistics on constructed sweeps and hand-made tables: no replay, no training."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from scipy import stats
from table_fakes import small_config, write_table

from pedtune.evaluate.stats import PAIRED, WELCH, difference, holm
from pedtune.replay.family import compare_family, family_pairs, summarise
from pedtune.replay.noise import final_scores, resample_table
from pedtune.replay.outcome import Outcome
from pedtune.replay.table import Table, load_table
from pedtune.replay.variant import Variant

RANDOM_FIFO, RANDOM_ASHA = Variant("random", "fifo", 6), Variant("random", "asha", 6)
HYPEROPT_FIFO, HYPEROPT_ASHA = Variant("hyperopt", "fifo", 6), Variant("hyperopt", "asha", 6)


def _outcomes(table: Table, picks: list[int]) -> list[Outcome]:
    top = table.true_score(table.best_config("bbox_mAP"), "bbox_mAP")
    best = table.best_config("bbox_mAP")
    return [Outcome(seed=seed, picked=pick, picked_score=0.0, regret=top - table.true_score(pick, "bbox_mAP"),
                    trial_epochs=6, found_best=pick == best, best_tried=True, best_stopped_early=False, curve=(),
                    wall_s=0.0) for seed, pick in enumerate(picks)]


def _table(folder: Path, seed_sd: float, seeds: int = 4) -> Table:
    # 8 configurations, worth 0.0 ... 0.07; each run adds its own fixed noise of sd ``seed_sd``.
    noise = np.random.default_rng(1).standard_normal((8, seeds))
    config = small_config({"record": {"seeds": list(range(seeds))}})
    write_table(folder, config, lambda n, s, e: 0.01 * n + seed_sd * float(noise[n, s]))
    return load_table(folder)[0]


def test_the_family_names_every_variant_against_the_baseline_and_asha_against_fifo_once():
    variants = [HYPEROPT_ASHA, RANDOM_ASHA, HYPEROPT_FIFO, RANDOM_FIFO]
    assert family_pairs(variants) == [(HYPEROPT_ASHA, RANDOM_FIFO), (RANDOM_ASHA, RANDOM_FIFO),
                                      (HYPEROPT_FIFO, RANDOM_FIFO), (HYPEROPT_ASHA, HYPEROPT_FIFO)]


def test_shared_searcher_seeds_are_paired_and_other_searchers_welch(tmp_path: Path):
    table = _table(tmp_path, seed_sd=0.001)
    rng = np.random.default_rng(0)
    # random+asha picks what random+fifo picks, one configuration lower in a third of the seeds: per-seed
    # regrets correlate strongly. hyperopt+fifo's picks are drawn on their own.
    base = list(rng.integers(2, 8, size=40))
    asha = [p - 1 if i % 3 == 0 else p for i, p in enumerate(base)]
    other = list(rng.integers(2, 8, size=40))
    results = {RANDOM_ASHA: _outcomes(table, asha), HYPEROPT_FIFO: _outcomes(table, other),
               RANDOM_FIFO: _outcomes(table, base)}
    noise = resample_table(final_scores(table, "bbox_mAP"), 500, np.random.default_rng(0))
    comparisons = {(c.a, c.b): c for c in compare_family(results, noise, np.random.default_rng(0))}
    paired, welch = comparisons[(RANDOM_ASHA, RANDOM_FIFO)], comparisons[(HYPEROPT_FIFO, RANDOM_FIFO)]
    regret = {v: [o.regret for o in outcomes] for v, outcomes in results.items()}
    assert np.corrcoef(regret[RANDOM_ASHA], regret[RANDOM_FIFO])[0, 1] > 0.8
    assert (paired.test.design, welch.test.design) == (PAIRED, WELCH)
    assert paired.test.p == pytest.approx(stats.ttest_rel(regret[RANDOM_ASHA], regret[RANDOM_FIFO]).pvalue)
    assert welch.test.p == pytest.approx(stats.ttest_ind(regret[HYPEROPT_FIFO], regret[RANDOM_FIFO],
                                                         equal_var=False).pvalue)
    # Pairing is what finds the small, consistent difference: unpaired, the same numbers show nothing.
    unpaired = difference(regret[RANDOM_ASHA], regret[RANDOM_FIFO], paired=False)
    assert paired.test.p < 0.001 < 0.05 < unpaired.p
    assert paired.word == "higher regret" and welch.word == "no detectable difference"
    assert [c.p_holm for c in comparisons.values()] == pytest.approx(holm([c.test.p for c in comparisons.values()]))


def test_the_table_noise_interval_widens_with_the_tables_seed_sd(tmp_path: Path):
    widths = []
    for seed_sd in (0.001, 0.02):
        table = _table(tmp_path / str(seed_sd), seed_sd)
        # Picks that vary little between searcher seeds: the table's noise is most of the interval.
        results = {RANDOM_ASHA: _outcomes(table, [6] * 27 + [5] * 3), RANDOM_FIFO: _outcomes(table, [7] * 27 + [6] * 3)}
        noise = resample_table(final_scores(table, "bbox_mAP"), 1000, np.random.default_rng(0))
        (comparison,) = compare_family(results, noise, np.random.default_rng(0))
        (row, _) = summarise(results, noise, np.random.default_rng(0))
        widths.append((comparison.with_table[1] - comparison.with_table[0],
                       row.regret_with_table[1] - row.regret_with_table[0], noise.best_changed))
    (quiet_delta, quiet_regret, quiet_changed), (noisy_delta, noisy_regret, noisy_changed) = widths
    assert noisy_delta > 1.5 * quiet_delta and noisy_regret > 1.5 * quiet_regret
    assert quiet_changed == 0.0 < noisy_changed


def test_shares_carry_wilson_intervals(tmp_path: Path):
    table = _table(tmp_path, seed_sd=0.001)
    results = {RANDOM_FIFO: _outcomes(table, [7] * 8 + [3] * 42)}
    noise = resample_table(final_scores(table, "bbox_mAP"), 200, np.random.default_rng(0))
    (row,) = summarise(results, noise, np.random.default_rng(0))
    assert (row.found_best.count, row.found_best.of) == (8, 50)
    low, high = row.found_best.interval
    assert low < 0.16 < high and high - low > 0.15  # 16 % of 50 sweeps: anywhere from about 8 % to 29 %
