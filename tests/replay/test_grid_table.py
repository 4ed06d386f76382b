"""The recorded grid and table: bins, the proposal -> configuration map, the CSV round trip."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from table_fakes import small_config, write_table

from pedtune.config import ConfigError
from pedtune.config.schema import Distribution
from pedtune.replay.grid import Grid, level_of, level_values
from pedtune.replay.table import TABLE_FILE, TableError, load_table, recording_folder
from pedtune.tune.space import ray_domain


def test_levels_are_midpoints_of_equally_likely_bins_and_draws_fill_them_evenly():
    lr = Distribution(param="train.lr", type="loguniform", lower=0.0001, upper=0.1)
    assert level_values(lr, 3) == pytest.approx([0.000316228, 0.00316228, 0.0316228])
    domain = ray_domain(lr)
    np.random.seed(0)
    draws = domain.sample(size=6000)
    counts = Counter(level_of(lr, 3, value) for value in draws)
    assert sorted(counts) == [0, 1, 2] and all(abs(c - 2000) < 150 for c in counts.values())
    assert [level_of(lr, 3, v) for v in level_values(lr, 3)] == [0, 1, 2]


def test_a_proposal_maps_to_the_configuration_whose_bins_hold_it():
    grid = Grid.from_config(small_config())
    configurations = grid.configurations()
    assert len(configurations) == 8 and grid.params == ["train.lr", "train.batch_size"]
    for number, overrides in enumerate(configurations):
        assert grid.index_of(overrides) == number
    # The train section (lr 0.01, batch 2) lies in the third lr bin.
    assert configurations[grid.index_of({"train.lr": 0.01, "train.batch_size": 2})] == {
        "train.lr": pytest.approx(0.00749894), "train.batch_size": 2}


def test_levels_must_cover_the_searched_parameters():
    config = small_config()
    with pytest.raises(ConfigError, match="no entry for train.lr"):
        Grid.from_config(config.model_copy(update={"record": config.record.model_copy(update={"levels": {}})}))
    bad = config.model_copy(update={"record": config.record.model_copy(update={"levels": {"train.lr": 2,
                                                                                         "train.momentum": 2}})})
    with pytest.raises(ConfigError, match="train.momentum, which tune.search_space does not search"):
        Grid.from_config(bad)


def test_the_table_round_trips_with_a_diverged_run_and_refuses_to_replay_unfinished(tmp_path: Path):
    config = small_config()
    write_table(tmp_path, config, lambda n, s, e: None if (n, s, e) == (7, 1, 2) else n / 10 + e / 100)
    table, provenance = load_table(tmp_path)
    assert table.configs == 8 and table.seeds == (0, 1) and table.epochs == 3
    diverged = table.run(7, 1)
    assert diverged.diverged_at == 2 and len(diverged.epochs) == 1 and diverged.final("bbox_mAP", 3) == 0.0
    assert table.run(6, 0).score("bbox_mAP", 2) == pytest.approx(0.62)
    assert table.best_config("bbox_mAP") == 6  # 7 diverged at one seed: its mean counts that run as 0
    lines = (tmp_path / TABLE_FILE).read_text().splitlines()
    (tmp_path / TABLE_FILE).write_text("\n".join(lines[:-3]) + "\n")  # the last run, cut off
    with pytest.raises(TableError, match="holds 15 of 16 runs"):
        load_table(tmp_path)


def test_a_recording_left_at_the_former_default_folder_is_named_with_the_new_one(tmp_path: Path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert recording_folder("recordings/recorded") == Path("recordings/recorded")  # nothing anywhere: fine
    (tmp_path / "benchmarks/recorded").mkdir(parents=True)
    (tmp_path / "benchmarks/recorded" / TABLE_FILE).write_text("config\n")
    with pytest.raises(TableError, match="benchmarks/recorded.*recordings/recorded"):
        recording_folder("recordings/recorded")
    assert recording_folder("benchmarks/recorded") == Path("benchmarks/recorded")  # set explicitly: used as is
