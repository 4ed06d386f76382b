"""`pedtune record` on tiny synthetic data: the table, resuming and growing it, refusing other settings, replay."""

from __future__ import annotations

import subprocess
import sys
from copy import deepcopy
from pathlib import Path

import pytest
import yaml
from study_copy import TINY, merge
from table_fakes import small_config

from pedtune import paths
from pedtune.config import validate
from pedtune.data.fetch import fetch_dataset
from pedtune.model.weights import save_weights
from pedtune.replay.grid import Grid
from pedtune.replay.table import TABLE_FILE, TableError, load_table, read_provenance
from pedtune.stages.compare import run_compare
from pedtune.stages.record import check_extends, provenance, run_record
from pedtune.stages.split import run_split

REPO = Path(__file__).resolve().parents[2]
RECORD = {
    # The tiny study at 48x64 px with fewer regions per image: the record path is the same, its runs cheaper.
    "data": {"synthetic": {"height": 48, "width": 64}},
    "model": {"min_size": 48, "max_size": 64, "detections_per_img": 5, "box_batch_size_per_image": 32,
              "rpn_test_proposals": 100},
    "train": {"epochs": 1, "batch_size": 4, "lr": 0.01},
    "tune": {"search_space": [
        {"param": "train.lr", "type": "qloguniform", "lower": 0.0001, "upper": 0.1, "q": 0.0001},
        {"param": "train.batch_size", "type": "choice", "values": [4]},
    ]},
    "record": {"seeds": [0, 1], "folder": "bench"},
    "compare": {"seeds": 2, "searchers": ["hyperopt", "random"], "schedulers": ["fifo"], "budgets": [3]},
}


def _study(root: Path) -> dict:
    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    raw = merge(merge(raw, deepcopy(TINY)), deepcopy(RECORD))
    raw["record"]["levels"] = {"train.lr": 2}
    config = validate(raw)
    (root / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    fetch_dataset(config.data, root / paths.DATA_ROOT, index_file=root / paths.DATA_INDEX)
    run_split(config)
    save_weights(config.model, root / paths.PRETRAINED)
    return raw


@pytest.mark.slow
def test_record_resumes_refuses_other_settings_and_its_table_replays(study: Path, capsys: pytest.CaptureFixture):
    raw = _study(study)
    config = validate(raw)
    table_path = run_record(config)
    table, provenance = load_table(study / "bench")
    assert (table.configs, table.seeds, table.epochs) == (2, (0, 1), 1)
    assert provenance["grid"]["configurations"] == [{"train.lr": 0.0006, "train.batch_size": 4},
                                                    {"train.lr": 0.0178, "train.batch_size": 4}]
    assert len(provenance["dataset_hash"]) == 64 and provenance["params"]["model"]["weights"] == "none"
    lines = table_path.read_text().splitlines()
    assert len(lines) == 1 + 4 and all(",ok," in line for line in lines[1:])

    # Interrupted after three runs: only the fourth is trained again.
    table_path.write_text("\n".join(lines[:-1]) + "\n")
    capsys.readouterr()
    run_record(config)
    assert "3 of 4 runs recorded, 1 to go" in capsys.readouterr().err
    assert table_path.read_text().splitlines()[:4] == lines[:4] and len(table_path.read_text().splitlines()) == 5

    # The same data from another place is the same recording ...
    moved = deepcopy(raw)
    moved["data"]["num_workers"] = 1
    run_record(validate(moved))
    # ... other settings into the same folder are refused before any training, the table untouched.
    before = table_path.read_text()
    for change in ({"record": {"seeds": [0, 2]}}, {"model": {"max_size": 128}}, {"train": {"momentum": 0.8}}):
        with pytest.raises(TableError, match="other settings"):
            run_record(validate(merge(deepcopy(raw), deepcopy(change))))
        assert table_path.read_text() == before and read_provenance(study / "bench")["record"]["seeds"] == [0, 1]

    # A seed appended: the recorded rows are kept, the new seed's runs follow them, and the sitting is logged.
    grown = merge(deepcopy(raw), {"record": {"seeds": [0, 1, 2]}})
    run_record(validate(grown))
    after = table_path.read_text().splitlines()
    assert after[:5] == before.splitlines() and len(after) == 1 + 6
    provenance = read_provenance(study / "bench")
    assert provenance["record"]["seeds"] == [0, 1, 2] and provenance["sittings"][-1]["runs"] == 2
    assert load_table(study / "bench")[0].seeds == (0, 1, 2)
    config = validate(grown)

    output = run_compare(config)
    verdict = (output / "verdict.md").read_text()
    assert "| hyperopt+fifo | 3 |" in verdict and "| random+fifo | 3 |" in verdict
    assert "2 configurations × 3 training seeds" in verdict


def test_the_cli_names_an_unfinished_table(study: Path):
    raw = _study(study)
    (study / "bench").mkdir()
    (study / "bench" / TABLE_FILE).write_text("config\n")
    result = subprocess.run([sys.executable, "-m", "pedtune", "compare"], capture_output=True, text=True, cwd=study)
    assert result.returncode == 1 and "provenance.json not found" in result.stderr
    result = subprocess.run([sys.executable, "-m", "pedtune", "record"], capture_output=True, text=True, cwd=study)
    assert result.returncode == 1 and "exists without its provenance.json" in result.stderr
    assert raw["record"]["folder"] == "bench"


def _recorded(changes: dict | None = None) -> dict:
    config = small_config(changes)
    return provenance(config, Grid.from_config(config), "0" * 64, config.record.epochs or config.train.epochs)


def test_a_recording_grows_by_seeds_and_configurations_and_nothing_else(tmp_path: Path):
    recorded = _recorded()
    check_extends(tmp_path, recorded, _recorded({"record": {"seeds": [0, 1, 2]}}))
    # lr at 4 levels within a wider range than recorded would move the recorded configurations: refused;
    # batch size 8 added to the choice adds configurations after the recorded ones only if it comes last.
    wider = {"tune": {"search_space": [{"param": "train.lr", "type": "loguniform", "lower": 0.0001, "upper": 1.0},
                                       {"param": "train.batch_size", "type": "choice", "values": [2, 4]}]}}
    with pytest.raises(TableError, match="recorded configuration 0 would train with other settings"):
        check_extends(tmp_path, recorded, _recorded(wider))
    # The train section's own value of a searched parameter reaches no recorded run; a fixed one does.
    check_extends(tmp_path, recorded, _recorded({"train": {"lr": 0.002}}))
    with pytest.raises(TableError, match="recorded configuration 0 would train with other settings"):
        check_extends(tmp_path, recorded, _recorded({"train": {"weight_decay": 0.001}}))
    for change, reason in (({"model": {"min_size": 96}}, "model differs"),
                           ({"train": {"epochs": 2}}, "epochs differs"),
                           ({"record": {"seeds": [1, 2]}}, "leaves out recorded seeds \\[0\\]")):
        with pytest.raises(TableError, match=reason):
            check_extends(tmp_path, recorded, _recorded(change))


def test_a_configuration_appended_to_the_grid_extends_it(tmp_path: Path):
    recorded = _recorded()
    grown = deepcopy(recorded)
    grown["grid"]["configurations"].append({"train.lr": 0.05, "train.batch_size": 2})
    check_extends(tmp_path, recorded, grown)
    with pytest.raises(TableError, match="the grid has 8 configurations, 9 are recorded"):
        check_extends(tmp_path, grown, recorded)
