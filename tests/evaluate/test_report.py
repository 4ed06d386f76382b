"""The report's numbers from hand-made run results (the stage test's untrained models all score 0)."""

from __future__ import annotations

import csv
import io
import random
from dataclasses import replace
from pathlib import Path

import pytest
import yaml

from dvc_metrics import columns, numbers_only
from pedtune.config import validate, with_train_overrides
from pedtune.engine.coco_eval import METRIC_NAMES
from pedtune.evaluate.pictures import save_per_seed_plot
from pedtune.evaluate.report import Study, compare, metrics_json, per_seed_csv, report_markdown, summary_json
from pedtune.evaluate.runs import INITIAL, TUNED, RunResult, shared_result

REPO_ROOT = Path(__file__).resolve().parents[2]
# Per seed: initial bbox_mAP, tuned bbox_mAP (other metrics follow from them).
SCORES = {0: (0.50, 0.58), 1: (0.40, 0.49), 2: (0.45, 0.52)}


def _result(name: str, seed: int, bbox: float) -> RunResult:
    test = {metric: bbox for metric in METRIC_NAMES} | {"segm_mAP": bbox / 2}
    return RunResult(name, seed, [{"bbox_mAP": bbox}], test, wall_time_s=90.0, device="cpu", state_dict=None)


def _diverged(name: str, seed: int) -> RunResult:
    return RunResult(name, seed, [{"bbox_mAP": 0.1}] * 2, {}, wall_time_s=20.0, device="cpu", state_dict=None,
                     diverged="non-finite loss at epoch 3, step 2")


def _out_of_memory(name: str, seed: int) -> RunResult:
    return RunResult(name, seed, [{"bbox_mAP": 0.1}], {}, wall_time_s=30.0, device="cuda (H100)", state_dict=None,
                     out_of_memory="CUDA out of memory. Tried to allocate 2.00 GiB.")


@pytest.fixture
def results() -> list[RunResult]:
    runs = [_result(INITIAL, seed, initial) for seed, (initial, _) in SCORES.items()]
    runs += [_result(TUNED, seed, tuned) for seed, (_, tuned) in SCORES.items()]
    random.Random(0).shuffle(runs)  # results arrive in completion order
    return runs


@pytest.fixture
def study(results: list[RunResult]) -> Study:
    config = validate(yaml.safe_load((REPO_ROOT / "params.yaml").read_text(encoding="utf-8")))
    tuned = with_train_overrides(config, {"train.lr": 0.02, "train.optimizer": "adamw"})
    return Study(
        configs={INITIAL: config, TUNED: tuned},
        comparison=compare(results, [0, 1, 2]),
        results=results,
        search_cost={"num_trials": 20.0, "trial_epochs": 87.0, "wall_time_s": None},
        images={"train": 119, "val": 26, "test": 25},
        execution="one run at a time",
        machine={"device": "cpu"},
        wall_time_s=4000.0,
    )


def test_differences_are_paired_by_seed_whatever_the_arrival_order(study: Study):
    difference = study.comparison.differences["bbox_mAP"]
    assert difference.mean == pytest.approx((0.08 + 0.09 + 0.07) / 3)
    assert difference.ci_low > 0  # consistent gains: an unpaired view would not show this
    assert study.comparison.spreads[INITIAL]["bbox_mAP"].std == pytest.approx(0.05)


def test_metrics_json_holds_few_numbers_and_the_summary_the_rest(study: Study):
    metrics = metrics_json(study)
    assert metrics[INITIAL]["bbox_mAP"] == {"mean": 0.45, "std": 0.05}
    assert metrics["delta"]["segm_mAP"]["mean"] == pytest.approx(0.04)
    shown = columns(metrics)
    assert len(shown) <= 20 and numbers_only(shown), shown
    summary = summary_json(study)
    assert summary["delta_verdicts"]["bbox_mAP"] == summary["verdict"] == "improvement"
    assert (summary["seeds"], summary["epochs"]) == ([0, 1, 2], {INITIAL: 10, TUNED: 10})
    assert set(summary[INITIAL]) == set(METRIC_NAMES)  # every test metric's spread, not only the headline two
    assert summary["tuned_is_initial"] is False


def test_report_table_and_cost(study: Study):
    report = report_markdown(study)
    assert "| bbox mAP | 0.450 ± 0.050 | 0.530 ± 0.046 | +0.080 | [+0.055, +0.105] |" in report
    assert "**Verdict on bbox mAP (the metric the search optimised): improvement**" in report
    assert "| lr (searched) | 0.005 | 0.02 |" in report and "| optimizer | sgd | adamw |" in report
    assert "| momentum |" not in report  # unchanged and not searched
    assert "| search: epochs trained by all trials | 87 |" in report and "| search: wall time | n/a |" in report
    assert "| evaluation: training runs | 6 (2 configs × 3 seeds), 60 epochs |" in report
    assert "| evaluation: wall time | 1 h 06 min |" in report
    assert "on the train split (119 images) for 10 epochs" in report


def test_per_seed_csv_is_sorted_by_config_then_seed(results: list[RunResult]):
    rows = list(csv.DictReader(io.StringIO(per_seed_csv(results))))
    first_two = [(r["config"], r["seed"], r["run"]) for r in rows[:2]]
    assert first_two == [(INITIAL, "0", "initial seed 0"), (INITIAL, "1", "initial seed 1")]
    assert [float(r["bbox_mAP"]) for r in rows] == [0.5, 0.4, 0.45, 0.58, 0.49, 0.52]


def test_an_interval_bound_too_small_for_three_decimals_keeps_its_sign(study: Study):
    # Differences of 0.001, 0.002, 0.0015: the interval [0.00026, 0.0027] lies above 0, and
    # the table must not print its lower bound as +0.000 beside that verdict.
    close = {0: (0.500, 0.501), 1: (0.400, 0.402), 2: (0.450, 0.4515)}
    results = [_result(name, seed, pair[i]) for seed, pair in close.items() for i, name in enumerate((INITIAL, TUNED))]
    report = report_markdown(replace(study, comparison=compare(results, [0, 1, 2]), results=results))
    assert "| +0.002 | [+2.6e-04, +0.003] |" in report
    assert "**Verdict on bbox mAP (the metric the search optimised): improvement**" in report


def test_a_diverged_run_leaves_its_seed_out_of_the_pairs_and_is_reported(study: Study, tmp_path: Path):
    results = [r for r in study.results if (r.name, r.seed) != (TUNED, 1)] + [_diverged(TUNED, 1)]
    comparison = compare(results, [0, 1, 2])
    assert comparison.paired_seeds == [0, 2] and comparison.failed[TUNED] == {1: "diverged: non-finite loss at epoch 3, step 2"}
    assert comparison.spreads[TUNED]["bbox_mAP"].n == 2 and comparison.spreads[INITIAL]["bbox_mAP"].n == 3
    assert comparison.differences["bbox_mAP"].n == 2
    assert comparison.differences["bbox_mAP"].mean == pytest.approx((0.08 + 0.07) / 2)
    partial = replace(study, comparison=comparison, results=results)
    report = report_markdown(partial)
    assert "**Runs without a test score**: tuned seed 1 (diverged: non-finite loss at epoch 3, step 2)." in report
    assert "ran out of memory" not in report
    assert "cover the 2 seeds where both configurations finished (0, 2)" in report
    assert "Mean ± sample standard deviation over each configuration's finished runs." in report
    assert "on those 2 differences (1 degrees of freedom)" in report
    assert "The pictures show no" not in report  # seed 0, the one drawn, finished under both
    assert "| evaluation: training runs | 6 (2 configs × 3 seeds), 52 epochs |" in report  # 5 × 10 + 2
    assert (metrics_json(partial)["runs_diverged"], metrics_json(partial)["runs_out_of_memory"]) == (1, 0)
    rows = list(csv.DictReader(io.StringIO(per_seed_csv(results))))
    assert ("tuned", "1") not in {(row["config"], row["seed"]) for row in rows} and len(rows) == 5
    save_per_seed_plot(tmp_path / "per_seed.png", comparison.scores, ["bbox_mAP", "segm_mAP"])
    assert (tmp_path / "per_seed.png").stat().st_size > 0


def test_a_run_out_of_memory_is_reported_like_a_diverged_one_and_the_others_still_count(study: Study):
    results = [r for r in study.results if (r.name, r.seed) not in ((INITIAL, 2), (TUNED, 1))]
    results += [_out_of_memory(INITIAL, 2), _diverged(TUNED, 1)]
    comparison = compare(results, [0, 1, 2])
    assert comparison.paired_seeds == [0] and comparison.spreads[INITIAL]["bbox_mAP"].n == 2
    assert comparison.failed == {INITIAL: {2: "out of memory: CUDA out of memory. Tried to allocate 2.00 GiB."},
                                 TUNED: {1: "diverged: non-finite loss at epoch 3, step 2"}}
    partial = replace(study, comparison=comparison, results=results)
    metrics = metrics_json(partial)
    assert (metrics["runs_trained"], metrics["runs_diverged"], metrics["runs_out_of_memory"]) == (6, 1, 1)
    report = report_markdown(partial)
    assert ("**Runs without a test score**: initial seed 2 (out of memory: CUDA out of memory. Tried to allocate "
            "2.00 GiB.); tuned seed 1 (diverged: non-finite loss at epoch 3, step 2).") in report
    assert "A run that ran out of memory was trained once more, alone, after the others, and failed again." in report
    assert "| evaluation: training runs | 6 (2 configs × 3 seeds), 43 epochs |" in report  # 4 × 10 + 2 + 1
    rows = list(csv.DictReader(io.StringIO(per_seed_csv(results))))
    assert {(row["config"], row["seed"]) for row in rows} == {("initial", "0"), ("initial", "1"), ("tuned", "0"),
                                                              ("tuned", "2")}


def test_fewer_than_two_finished_pairs_leave_the_verdict_undetermined(study: Study):
    results = [r for r in study.results if r.name == INITIAL or r.seed == 0]
    results += [_diverged(TUNED, 1), _diverged(TUNED, 2)]
    comparison = compare(results, [0, 1, 2])
    assert comparison.paired_seeds == [0]
    assert comparison.differences["bbox_mAP"] is None and comparison.spreads[TUNED]["bbox_mAP"].n == 1
    partial = replace(study, comparison=comparison, results=results)
    metrics = metrics_json(partial)
    assert summary_json(partial)["verdict"] == "undetermined" and metrics["runs_diverged"] == 2
    assert metrics["delta"]["bbox_mAP"] == {"mean": None, "ci_low": None, "ci_high": None}
    assert metrics[TUNED]["bbox_mAP"] == {"mean": 0.58, "std": None}  # its one finished run
    report = report_markdown(partial)
    assert "| bbox mAP | 0.450 ± 0.050 | 0.580 (1 run) | n/a | n/a |" in report
    assert "**Verdict on bbox mAP (the metric the search optimised): undetermined** — fewer than 2 seeds" in report
    assert "Student t-interval" not in report


def test_a_diverged_first_seed_is_missing_from_the_pictures_and_the_report_says_so(study: Study, tmp_path: Path):
    results = [r for r in study.results if r.name == INITIAL] + [_diverged(TUNED, seed) for seed in (0, 1, 2)]
    comparison = compare(results, [0, 1, 2])
    report = report_markdown(replace(study, comparison=comparison, results=results))
    assert "The pictures show no tuned model: its seed 0 run, the one drawn, did not finish." in report
    save_per_seed_plot(tmp_path / "per_seed.png", comparison.scores, ["bbox_mAP"])
    only_diverged = [_diverged(name, seed) for name in (INITIAL, TUNED) for seed in (0, 1, 2)]
    save_per_seed_plot(tmp_path / "none.png", compare(only_diverged, [0, 1, 2]).scores, ["bbox_mAP"])
    assert (tmp_path / "none.png").stat().st_size > 0


def test_equal_differences_at_every_seed_are_flagged_rather_than_read_as_certainty(study: Study):
    shifted = {0: (0.50, 0.60), 1: (0.40, 0.50), 2: (0.45, 0.55)}  # +0.1 at every seed
    results = [_result(name, seed, pair[i]) for seed, pair in shifted.items()
               for i, name in enumerate((INITIAL, TUNED))]
    report = report_markdown(replace(study, comparison=compare(results, [0, 1, 2]), results=results))
    assert "improvement** — the 95% confidence interval of the paired difference lies above 0." in report
    assert "The per-seed differences are all equal, so the interval has no width" in report
    assert "all equal" not in report_markdown(study)  # differences 0.08, 0.09, 0.07


def test_readme_preamble_is_drawn_from_the_report(study: Study):
    from pedtune.evaluate.readme import preamble

    costed = replace(study, search_cost={"num_trials": 6.0, "trial_epochs": 12.0, "wall_time_s": 1974.0},
                     machine={"processor / machine": "Some CPU / x86_64", "CPUs": "2", "device": "cpu"})
    report = report_markdown(costed)
    text = preamble(report, "studies/x/report.md")
    assert text.startswith("Generated by `pedtune readme-results` from `studies/x/report.md`, not typed by hand.")
    assert "The study ran on Some CPU, 2 CPUs, device cpu." in text
    # 1974 s of search, 4000 s of evaluation, as the report's cost table gives them (pedtune.units.duration).
    assert "The search (6 trials, 12 epochs trained) took 32 min 54 s, the evaluation (6 training runs) 1 h 06 min: " \
           "99 min in all." in text  # the sum of the two figures as shown
    # A report without a cost table (or with a search time not recorded) gives no total.
    assert "in all" not in preamble(report_markdown(study), "studies/x/report.md")


def test_when_the_search_kept_the_initial_config_the_report_says_so_and_gives_no_verdict(study: Study):
    runs = [_result(INITIAL, seed, initial) for seed, (initial, _) in SCORES.items()]
    results = runs + [shared_result(result, TUNED) for result in runs]
    config = study.configs[INITIAL]
    kept = replace(study, configs={INITIAL: config, TUNED: config}, comparison=compare(results, [0, 1, 2]),
                   results=results,
                   search_cost={**study.search_cost, "initial_bbox_mAP": 0.41, "best_searched_bbox_mAP": 0.3875})
    report = report_markdown(kept)
    assert report.startswith("**The initial configuration on the held-out test split.**")
    assert "it was trained 3 times (seeds 0, 1, 2)" in report
    assert ("**The sweep's best configuration is the initial one; there is no tuned model to compare.** The "
            "searcher's best proposal reached val bbox mAP 0.3875 against the initial configuration's 0.4100 "
            "(-0.022): one trial each in the sweep, so this gap has no confidence interval") in report
    assert "| bbox mAP | 0.450 ± 0.050 |\n" in report
    assert "Verdict" not in report and "Δ" not in report and "no detectable difference" not in report
    metrics, summary = metrics_json(kept), summary_json(kept)
    assert metrics["delta"]["bbox_mAP"] == {"mean": None, "ci_low": None, "ci_high": None}
    assert (summary["verdict"], summary["tuned_is_initial"]) == (None, True)
    # Without the sweep's scores (an older metrics/tune.json) the report still says what happened.
    unknown = report_markdown(replace(kept, search_cost=study.search_cost))
    assert "No configuration the searcher proposed has a val score to set beside it" in unknown


def test_per_category_ap_is_reported_with_na_for_a_category_the_test_split_lacks(results: list[RunResult],
                                                                                study: Study):
    with_categories = [replace(result, test={**result.test, "bbox_AP/cat": 0.25, "segm_AP/cat": 0.5})
                       for result in results]
    categorised = replace(study, results=with_categories, comparison=compare(with_categories, [0, 1, 2]),
                          categories=("cat", "dog"))
    report = report_markdown(categorised)
    assert "| cat | 0.250 ± 0.000 | 0.500 ± 0.000 | 0.250 ± 0.000 | 0.500 ± 0.000 |" in report
    assert "| dog | n/a | n/a | n/a | n/a |" in report
    assert "| category |" not in report_markdown(study)  # one category: the headline says it all
