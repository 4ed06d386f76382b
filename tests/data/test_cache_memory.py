"""data.cache states its memory before it is filled and refuses to exceed data.cache_budget_gib."""

from __future__ import annotations

from pathlib import Path

import pytest

from coco_fakes import dir_config, write_coco
from pedtune.cli import main
from pedtune.config.schema import SyntheticConfig
from pedtune.data.cache_memory import cache_footprint, cache_statement, synthetic_footprint
from pedtune.data.dataset import SampleSet, list_stems, reader_for
from pedtune.data.fetch import fetch_dataset
from pedtune.data.index import index_folder
from pedtune.data.split import make_split, write_split
from pedtune.errors import DataError
from pedtune.stages.inputs import read_inputs


def _cached_bytes(store: SampleSet) -> int:
    store.preload()
    return sum(store[i].image.numel() * store[i].image.element_size() + store[i].masks.numel()
               for i in range(len(store)))


@pytest.mark.parametrize("size", [(48, 64), (96, 128)])
def test_the_estimate_is_what_the_pennfudan_cache_holds(synthetic_root, size):
    stems = list_stems(synthetic_root)
    store = SampleSet(synthetic_root, stems, *size, cache=True)
    assert cache_footprint(index_folder(synthetic_root), stems, *size).num_bytes == _cached_bytes(store)


def test_the_estimate_is_what_the_coco_cache_holds(tmp_path: Path):
    images, annotation = write_coco(tmp_path / "source")
    index = fetch_dataset(dir_config(images, str(annotation)), tmp_path / "dataset")
    stems = sorted(index.images)
    store = SampleSet(tmp_path / "dataset", stems, 64, 80, cache=True, reader=reader_for(tmp_path / "dataset", index))
    # crowd regions are not among the training masks, negatives hold only their image
    assert cache_footprint(index, stems, 64, 80).num_bytes == _cached_bytes(store)


def test_the_synthetic_bound_holds_before_the_fetch(tiny_config, synthetic_root, synthetic_cfg):
    config = tiny_config.model_copy(update={"data": tiny_config.data.model_copy(update={"synthetic": synthetic_cfg})})
    bound = synthetic_footprint(config.data, config.model)
    stems = list_stems(synthetic_root)
    actual = cache_footprint(index_folder(synthetic_root), stems, config.model.min_size, config.model.max_size)
    assert bound.at_most and actual.num_bytes <= bound.num_bytes


def _study(tmp_path: Path, monkeypatch, config) -> None:
    """A fetched synthetic PennFudanPed of 6 images with its split in ``tmp_path``, the working folder."""
    monkeypatch.chdir(tmp_path)
    six = SyntheticConfig(num_images=6, height=48, width=64, max_instances=3, seed=0)
    fetch_dataset(config.data.model_copy(update={"source": "synthetic", "synthetic": six}),
                  tmp_path / "data" / "dataset", index_file=tmp_path / "data" / "index.json")
    stems = list_stems(tmp_path / "data" / "dataset")
    write_split(make_split(stems, config.data.split), tmp_path / "data" / "split.json", config.data.split, "x")


def _with_budget(config, budget_gib):
    return config.model_copy(update={"data": config.data.model_copy(update={"cache_budget_gib": budget_gib})})


def test_a_stage_states_the_memory_and_refuses_over_the_budget(tmp_path, monkeypatch, tiny_config, capsys):
    _study(tmp_path, monkeypatch, tiny_config)
    inputs = read_inputs(tiny_config)
    assert len(inputs.samples("train")) == len(inputs.split.train)
    said = capsys.readouterr().err
    # the whole split, stated before the first part is decoded
    assert said.index("data.cache: 6 images decoded at 48-64 px take about") < said.index("images decoded and cached")
    assert "within data.cache_budget_gib: 8\n" in said

    tight = read_inputs(_with_budget(tiny_config, 1e-6))  # about 1 KiB: less than one image
    with pytest.raises(DataError, match=r"data.cache: 6 images .* take about \d+ KiB in memory .*more than "
                                        r"data.cache_budget_gib: 1e-06; set data.cache: false"):
        tight.samples("train")
    uncached = read_inputs(tiny_config.model_copy(update={"data": tiny_config.data.model_copy(
        update={"cache": False, "cache_budget_gib": 1e-6})}))
    assert len(uncached.samples("val")) == len(uncached.split.val)  # no cache, nothing to hold


def test_check_reports_the_cache_and_refuses_over_the_budget(tmp_path, monkeypatch, tiny_config, raw_params, capsys):
    import yaml

    _study(tmp_path, monkeypatch, tiny_config)
    assert "data.cache: 6 images decoded at 48-64 px take about" in cache_statement(tiny_config)
    raw_params["model"].update(arch="maskrcnn_mobilenet_v3_large_fpn", weights="none", min_size=48, max_size=64)
    raw_params["train"]["device"] = "cpu"
    raw_params["tune"]["resources_per_trial"]["gpu"] = 0
    raw_params["data"]["cache_budget_gib"] = 1e-6
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(raw_params))
    assert main(["check"]) == 1
    assert "more than data.cache_budget_gib: 1e-06" in capsys.readouterr().err
