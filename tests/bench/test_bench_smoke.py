"""Keep the benchmark scripts working: each runs once at a tiny size on synthetic data.

Nothing here times anything or asserts a speed; the benchmarks themselves are in bench/.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

TINY = ["--synthetic", "--num-images", "8", "--image-size", "48x64", "--min-size", "48", "--max-size", "64",
        "--threads", "1"]


def _run(name: str, tmp_path: Path, *extra: str) -> dict:
    module = __import__(f"bench.{name}", fromlist=["main"])
    out = tmp_path / f"{name}.json"
    result = module.main([*TINY, *extra, "--json", str(out)])
    assert json.loads(out.read_text())["benchmark"] == name == result["benchmark"]
    return result


def test_train_step(tmp_path: Path) -> None:
    result = _run("train_step", tmp_path, "--steps", "1", "--reps", "1", "--size-divisible", "128")
    run = result["runs"][0]
    assert set(run["images_per_s"]) == set(run["first_pass_images_per_s"]) == {"bare", "project", "project_noclip"}
    assert run["ratio_project_vs_bare"]["n"] == 1
    assert run["size_divisible"] == 128 and run["padded_shapes"] == 1


def test_train_step_rejects_a_padding_multiple_below_one(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from bench import train_step

    out = tmp_path / "train_step.json"
    with pytest.raises(SystemExit) as exit_info:
        train_step.main([*TINY, "--size-divisible", "0", "--json", str(out)])
    assert exit_info.value.code == 2 and "--size-divisible 0: must be a positive" in capsys.readouterr().err
    assert not out.exists()


def test_train_step_counts_the_padded_shapes_the_model_sees() -> None:
    from bench import common
    from bench.train_step import padded_shapes
    from pedtune.model.factory import build_model

    config = common.study_config(None, {"model": {"arch": "maskrcnn_mobilenet_v3_large_fpn", "min_size": 64,
                                                  "max_size": 200}})
    transform = build_model(config.model).transform
    wide, narrow = torch.zeros(3, 64, 150), torch.zeros(3, 64, 70)
    batches = [((wide, narrow), ({}, {})), ((narrow, narrow), ({}, {}))]
    assert padded_shapes(transform, batches) == {(64, 160), (64, 96)}  # the widest image, padded to 32
    transform.size_divisible = 128
    assert padded_shapes(transform, batches) == {(128, 256), (128, 128)}


def test_data_pipeline(tmp_path: Path) -> None:
    result = _run("data_pipeline", tmp_path, "--models", "light", "--workers", "0", "1", "--reps", "1",
                  "--steps", "1", "--step-reps", "1")
    assert set(result["ratio_loader_vs_step"]) == {f"cache={c},workers={w}" for c in ("on", "off") for w in (0, 1)}


def test_data_wait(tmp_path: Path) -> None:
    result = _run("data_wait", tmp_path, "--workers", "1", "0", "--steps", "1", "--reps", "1")
    assert set(result["runs"]) == {"workers=1", "workers=0"} and result["cache"] is False
    assert all(0 <= run["data_share"]["median"] <= 1 for run in result["runs"].values())


def test_cache_memory(tmp_path: Path) -> None:
    (run,) = _run("cache_memory", tmp_path, "--sizes", "48x64")["runs"]
    assert run["images"] == 8 and 1 <= run["held_vs_estimate"] < 1.05  # boxes and labels: not in the estimate


def test_original_size_scoring_of_the_perfect_detector(tmp_path: Path) -> None:
    oracle = _run("original_size_scoring", tmp_path, "--skip-model")["oracle"]
    assert set(oracle["old"].values()) == {1.0} and oracle["new"]["bbox_AP50"] == 1.0


def test_evaluation(tmp_path: Path) -> None:
    # From params.yaml (the GPU defaults, as a GPU run passes it), two epochs, one key changed.
    result = _run("evaluation", tmp_path, "--train-images", "2", "--reps", "1", "--epochs", "2",
                  "--params", str(REPO / "params.yaml"), "--set", "data.num_workers=0")
    run = result["runs"][0]
    assert run["epochs"] == 2 and len(run["epoch_times_s"]) == 2 and run["epoch_time_s"] == run["epoch_times_s"][-1]
    assert 0 < run["eval_fraction"] < 1
    assert all(s["agree_1e-4"] for s in run["prediction_sets"].values())
    assert result["args"]["overrides"] == "['data.num_workers=0']"
    assert run["profiled"] is False


def test_evaluation_profile(tmp_path: Path) -> None:
    profile = tmp_path / "fit_profile.txt"
    result = _run("evaluation", tmp_path, "--train-images", "2", "--reps", "1", "--proposals", "150",
                  "--proposal-reps", "1", "--profile", str(profile))
    assert result["runs"][0]["profiled"] is True
    text = profile.read_text()
    # fit's loop is in the table: the loader's batches, the optimizer's step, the model's convolutions.
    assert "top 30 by self_cpu_time_total" in text
    for op in ("enumerate(DataLoader)", "Optimizer.step", "aten::conv"):
        assert op in text, op
    from bench import run_all  # the profiler inflates the fraction: the table row says so

    assert "val images, under torch.profiler)" in run_all.table(tmp_path)


def test_mask_paste(tmp_path: Path) -> None:
    result = _run("mask_paste", tmp_path, "--images", "2", "--reps", "1")
    (run,) = result["runs"]
    assert run["masks_identical_torchvision_vs_host_box"] is True and run["detections"] > 0
    assert set(run["seconds"]) == {"torchvision_paste", "host_box_paste"}  # no layout variant on the CPU
    assert run["ratio_host_box_vs_torchvision"]["n"] == 1
    from bench import run_all

    assert "masks identical: yes | identical masks | yes |" in run_all.table(tmp_path)


def test_mask_paste_tells_different_masks_apart() -> None:
    from bench.mask_paste import same_predictions

    mask = torch.zeros(1, 1, 4, 4, dtype=torch.bool)
    shifted = mask.clone()
    shifted[0, 0, 0, 0] = True
    assert same_predictions([(0, {"masks": mask})], [(0, {"masks": mask.clone()})])
    assert not same_predictions([(0, {"masks": mask})], [(0, {"masks": shifted})])
    assert not same_predictions([(0, {"masks": mask})], [(1, {"masks": mask})])


def test_set_overrides_nest_and_parse_as_yaml() -> None:
    from bench import common

    tree = common.overrides(["data.num_workers=0", "train.amp=false", "model.arch=maskrcnn_resnet50_fpn"])
    assert tree == {"data": {"num_workers": 0}, "train": {"amp": False}, "model": {"arch": "maskrcnn_resnet50_fpn"}}
    with pytest.raises(SystemExit, match="expected KEY=VALUE"):
        common.overrides(["data.num_workers"])


def test_memory(tmp_path: Path) -> None:
    rows = _run("memory", tmp_path, "--models", "light", "--train-images", "2", "--val-images", "2")["models"]
    assert rows[0]["peak_rss_mb"] >= rows[0]["rss_before_fit_mb"] > 0


@pytest.mark.slow
def test_memory_of_a_reused_actor(tmp_path: Path) -> None:
    result = _run("memory", tmp_path, "--models", "light", "--reused-trials", "2", "--train-images", "2",
                  "--val-images", "2")["reused_actor"]
    assert result["actor_processes"] == 1 and len(result["trials"]) == 2
    assert all(row["peak_mb"] >= row["rss_start_mb"] > 0 for row in result["trials"])


@pytest.mark.slow
def test_tune_overhead(tmp_path: Path) -> None:
    result = _run("tune_overhead", tmp_path, "--trials", "2", "--epochs", "1", "--epoch-s", "0.1", "--reps", "1",
                  "--states", "tiny", "--no-mlflow")
    run = result["runs"][0]
    assert run["trial_epochs"] == 2 and run["init_to_first_trial_s"] > 0


@pytest.mark.slow
def test_asha_savings(tmp_path: Path) -> None:
    # Two noise seeds: their configs set train.seed 1, which a study file's evaluate.seeds holds.
    result = _run("asha_savings", tmp_path, "--trials", "2", "--epochs", "2", "--noise-seeds", "2",
                  "--pretrain-epochs", "0", "--roi-batch", "16", "--proposals", "20")
    assert result["sweeps"]["fifo"]["trial_epochs"] == 4
    assert result["sweeps"]["asha"]["failed"] == result["sweeps"]["fifo"]["failed"] == 0
    assert len(result["noise"]["initial_config_finals_over_seeds"]) == 2


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on a machine without CUDA")
def test_gpu_packing_refuses_without_cuda(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from bench import gpu_packing

    out = tmp_path / "gpu_packing.json"
    with pytest.raises(SystemExit, match="no CUDA device here") as exit_info:
        gpu_packing.main(["--json", str(out)])
    assert exit_info.value.code != 0 and not out.exists()


def test_asha_budget(tmp_path: Path) -> None:
    result = _run("asha_budget", tmp_path, "--sweeps", "2", "--only", "params", "--noise", "0.5")
    (row,) = result["simulated"]
    assert row["setting"] == "params.yaml" and row["sweeps"] == 2 and row["noise"] == 0.5


def test_table(tmp_path: Path) -> None:
    from bench import run_all

    assert run_all.table(tmp_path) == "no results yet"
    (tmp_path / "train_step.json").write_text(json.dumps({
        "benchmark": "train_step", "machine": {"cpu": "x", "cores": 2, "torch": "2", "device": "cpu", "loadavg_at_start": 0.5,
                                              "torch_threads": 2}, "measured_at": 1000,
        "runs": [{"arch": "maskrcnn_mobilenet_v3_large_fpn", "amp": False, "image_hw": [320, 427],
                  "ratio_project_vs_bare": {"median": 0.99, "min": 0.98, "max": 1.0, "n": 3},
                  "ratio_project_noclip_vs_bare": {"median": 1.0, "min": 0.99, "max": 1.01, "n": 3},
                  "images_per_s": {"bare": {"median": 2.0, "min": 1.9, "max": 2.1, "n": 3}}}],
    }))
    assert "| 1. training step" in run_all.table(tmp_path)
    # A variant measured on a GPU: its own header line, its rows tagged with the GPU.
    gpu = json.loads((tmp_path / "train_step.json").read_text())
    gpu["machine"] = {**gpu["machine"], "cpu": "y", "cores": 16, "device": "cuda", "gpu": "Some GPU"}
    gpu["runs"][0]["amp"] = True
    (tmp_path / "train_step_cuda.json").write_text(json.dumps(gpu))
    text = run_all.table(tmp_path)
    assert text.count(" cores, torch ") == 2 and "device cuda (Some GPU): train_step_cuda\n" in text
    assert "load" not in text  # the machine, not how busy it was
    assert "(mobilenet_v3_large_fpn, AMP, on Some GPU, 320×427)" in text and text.count("| 1. training step") == 2
    # A run with a padding multiple and its first pass over the batch shapes.
    gpu["runs"][0].update(size_divisible=128, padded_shapes=7, first_pass_images_per_s={"bare": 0.5, "project": 1.9})
    (tmp_path / "train_step_cuda.json").write_text(json.dumps(gpu))
    text = run_all.table(tmp_path)
    assert "(mobilenet_v3_large_fpn, AMP, padded to ×128, on Some GPU, 320×427)" in text
    assert "first pass over 7 batch shapes 0.50 img/s" in text and text.count("first pass") == 1


def test_table_keeps_the_latest_result_of_each_measurement(tmp_path: Path) -> None:
    from bench import run_all

    def result(ratio: float, measured_at: int) -> str:
        return json.dumps({
            "benchmark": "train_step", "machine": {"cpu": "x", "cores": 2, "torch": "2", "device": "cpu",
                                                  "loadavg_at_start": 0.5, "torch_threads": 2},
            "measured_at": measured_at,
            "runs": [{"arch": "maskrcnn_mobilenet_v3_large_fpn", "amp": False, "image_hw": [320, 427],
                      "ratio_project_vs_bare": {"median": ratio, "min": ratio, "max": ratio, "n": 3},
                      "ratio_project_noclip_vs_bare": {"median": 1.0, "min": 0.99, "max": 1.01, "n": 3},
                      "images_per_s": {"bare": {"median": 2.0, "min": 1.9, "max": 2.1, "n": 3}}}]})

    (tmp_path / "train_step.json").write_text(result(0.91, measured_at=2000))
    (tmp_path / "train_step_rerun.json").write_text(result(0.97, measured_at=1000))
    text = run_all.table(tmp_path)
    assert text.count("| 1. training step") == 1 and "| 0.910 (0.910–0.910, n=3)" in text
    (tmp_path / "train_step_rerun.json").write_text(result(0.97, measured_at=3000))
    assert "| 0.970 (0.970–0.970, n=3)" in run_all.table(tmp_path)


def test_performance_page_holds_the_current_table() -> None:
    from bench import run_all

    page = run_all.PERFORMANCE_PAGE.read_text(encoding="utf-8")
    assert run_all.replace_table(page, run_all.table(run_all.RESULTS)) == page, \
        "docs/performance.md's table is stale: run python -m bench.run_all --table-only"
    page = run_all.METHODOLOGY_PAGE.read_text(encoding="utf-8")
    scoring = run_all.table(run_all.RESULTS, run_all.SCORING_ROWS)
    assert scoring.count("| 12. ") >= 2
    assert run_all.replace_table(page, scoring, (run_all.SCORING_START, run_all.SCORING_END)) == page, \
        "docs/methodology.md's scoring rows are stale: run python -m bench.run_all --table-only"


def test_table_reads_asha_savings_against_the_simulation_at_its_settings(tmp_path: Path) -> None:
    from bench import run_all

    machine = {"cpu": "x", "cores": 2, "torch": "2", "device": "cpu", "loadavg_at_start": 0.5, "torch_threads": 1}
    # ASHA's recorded best_final is a trial it stopped after 2 epochs: the table takes the best of
    # those that ran all 10, as the tune stage does.
    asha = {"best_final": 0.05, "finals": [0.05, 0.02, 0.01], "epochs": [2, 10, 10], "trial_epochs": 92}
    fifo = {"best_final": 0.03, "finals": [0.03, 0.01], "epochs": [10, 10], "trial_epochs": 200}
    (tmp_path / "asha_savings.json").write_text(json.dumps({
        "benchmark": "asha_savings", "machine": machine, "measured_at": 1000, "args": {"concurrency": "2"},
        "searcher": "hyperopt",
        "trials": 20, "epochs": 10, "asha": {"grace_period": 2, "reduction_factor": 3},
        "sweeps": {"asha": asha, "fifo": fifo},
        "epoch_fraction_asha_vs_fifo": 0.46, "noise": {"stdev": 0.01}, "within_noise": True}))
    text = run_all.table(tmp_path)
    assert "92 vs 200 (46 %) |" in text  # nothing simulated yet
    assert "| 0.02 vs 0.03 (seed noise σ 0.01) | within noise | yes |" in text

    def simulated(concurrent: int, noise: float, mean: float) -> dict:
        return {"setting": f"s{concurrent}", "trials": 20, "epochs": 10, "max_t": 10, "grace_period": 2, "reduction_factor": 3.0,
                "max_concurrent": concurrent, "noise": noise, "sweeps": 400, "best_runs_to_the_end": 0.75,
                "fraction_of_fifo": {"mean": mean, "stdev": 0.079, "p10": 0.38, "p90": 0.56}}

    (tmp_path / "asha_budget.json").write_text(json.dumps({"benchmark": "asha_budget", "machine": machine,
                                                          "measured_at": 1000, "simulated": [
        simulated(1, 0.0, 0.465), simulated(2, 1.0, 0.389), simulated(2, 0.0, 0.467)]}))
    text = run_all.table(tmp_path)
    # Only the noiseless simulation at the run's own concurrency is its reference.
    assert "92 vs 200 (46 %); simulated 46.7 ± 7.9 % (p10–p90 38–56 %) |" in text
    assert "| 5. ASHA ÷ FIFO trial-epochs, simulated (s2: 20 trials × 10 epochs, grace 2, rf 3, 2 at a time; 400 sweeps) " \
           "| noise 1: 38.9 ± 7.9 % (p10–p90 38–56 %), best trial finishes in 75 %; noise 0: 46.7" in text
    # Whether a simulated setting meets the target is read from its noiseless expectation.
    assert "noise 0: 46.7 ± 7.9 % (p10–p90 38–56 %), best trial finishes in 75 % | ≤ 40 % | **no** |" in text
    assert text.count("| 5. ASHA ÷ FIFO") == 2
    # A run with another searcher seed says so.
    seeded = json.loads((tmp_path / "asha_savings.json").read_text())
    seeded["args"]["overrides"] = "['tune.seed=1']"
    (tmp_path / "asha_savings_seed1.json").write_text(json.dumps(seeded))
    assert "(hyperopt, 20 trials × 10 epochs, grace 2, rf 3, tune.seed=1, synthetic)" in run_all.table(tmp_path)


def test_predict(tmp_path: Path) -> None:
    result = _run("predict", tmp_path, "--images", "1", "--reps", "1")  # the 8 images' test split holds 1
    run = result["runs"][0]
    assert run["images"] == 1 and run["ratio_project_vs_bare"]["n"] == run["ratio_project_vs_bare_cpu"]["n"] == 1
    assert run["detections"]["bare"] == run["detections"]["project"]  # the same model on the same images


def test_registry(tmp_path: Path) -> None:
    result = _run("registry", tmp_path, "--steps", "1", "--reps", "1")
    run = result["runs"][0]
    assert run["registry_again_s"]["n"] == 1 and run["logged_model_bytes"] > 0
    assert 0 < run["registry_share_of_evaluate_upper_bound"] < 1
