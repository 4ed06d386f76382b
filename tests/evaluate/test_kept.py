"""Which model the evaluate stage keeps: fixed by the first seed, never by a test score."""

from __future__ import annotations

import pytest
import torch

from pedtune.errors import PedtuneError
from pedtune.evaluate.kept import kept_model
from pedtune.evaluate.runs import INITIAL, TUNED, RunResult, shared_result


def result(name: str, seed: int, test_map: float, weights: float | None, diverged: str | None = None) -> RunResult:
    state = None if weights is None else {"w": torch.tensor([weights])}
    return RunResult(name=name, seed=seed, history=[], test={} if diverged else {"bbox_mAP": test_map},
                     wall_time_s=1.0, device="cpu", state_dict=state, diverged=diverged)


def test_the_tuned_first_seed_model_is_kept_even_when_another_seed_scored_higher():
    results = [result(INITIAL, 1, 0.5, 1.0), result(TUNED, 1, 0.2, 2.0), result(INITIAL, 2, 0.6, None),
               result(TUNED, 2, 0.9, None)]
    kept = kept_model(results, [1, 2], tuned_is_initial=False)
    assert (kept.config, kept.seed, float(kept.state_dict["w"])) == (TUNED, 1, 2.0)


def test_the_initial_model_is_kept_and_said_so_when_the_sweep_kept_the_initial_configuration():
    first = result(INITIAL, 3, 0.5, 1.0)
    kept = kept_model([first, shared_result(first, TUNED)], [3], tuned_is_initial=True)
    assert (kept.config, kept.seed) == (INITIAL, 3) and "the sweep kept the initial configuration" in kept.note


def test_a_diverged_tuned_first_seed_keeps_the_initial_model_with_the_reason():
    results = [result(INITIAL, 1, 0.5, 1.0), result(TUNED, 1, 0.0, None, diverged="non-finite loss")]
    kept = kept_model(results, [1, 2], tuned_is_initial=False)
    assert (kept.config, kept.seed) == (INITIAL, 1) and "diverged: non-finite loss" in kept.note


def test_no_model_to_keep_is_a_clear_error():
    results = [result(INITIAL, 1, 0.0, None, diverged="nan"), result(TUNED, 1, 0.0, None, diverged="nan")]
    with pytest.raises(PedtuneError, match="no model to keep"):
        kept_model(results, [1], tuned_is_initial=False)
