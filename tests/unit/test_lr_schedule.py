"""The learning-rate schedule: warm-up in epochs, then the chosen decay (engine/train.py)."""

from __future__ import annotations

import pytest
import torch

from pedtune.config.schema import TrainConfig
from pedtune.engine.train import build_scheduler

LR = 0.01


def _lrs(cfg: TrainConfig, steps_per_epoch: int) -> list[float]:
    """The learning rate of every training step, and after the last one."""
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=cfg.lr)
    scheduler = build_scheduler(optimizer, cfg, steps_per_epoch)
    lrs = []
    for _ in range(cfg.epochs * steps_per_epoch):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    return lrs + [optimizer.param_groups[0]["lr"]]


@pytest.mark.parametrize("schedule", ["cosine", "constant", "multistep"])
def test_every_batch_size_warms_up_over_the_same_share_of_training(schedule):
    # 60, 30 and 15 steps per epoch: batch 2, 4 and 8 on PennFudanPed's 120 training images.
    # Counted in steps, a 100-step warm-up covered 1.7, 3.3 and 6.7 epochs: ASHA's rungs judged
    # large batches before they had trained at their full learning rate.
    cfg = TrainConfig(epochs=4, lr=LR, warmup_epochs=1.0, warmup_factor=0.001, lr_schedule=schedule,
                      lr_milestones=[3], lr_gamma=0.1)
    at_epoch_fractions = {}
    for steps_per_epoch in (60, 30, 15):
        lrs = _lrs(cfg, steps_per_epoch)
        at_epoch_fractions[steps_per_epoch] = [lrs[round(e * steps_per_epoch)] for e in (0, 0.4, 1, 2, 3.2)]
    first, *others = at_epoch_fractions.values()
    for lrs in others:
        assert lrs == pytest.approx(first, rel=1e-9)
    start, mid_warmup, warm, _, _ = first
    assert start == pytest.approx(LR * 0.001)
    assert mid_warmup == pytest.approx(LR * (0.001 + 0.999 * 0.4))
    assert warm == pytest.approx(LR)


def test_multistep_milestones_count_epochs_from_the_start_of_training():
    cfg = TrainConfig(epochs=4, lr=LR, warmup_epochs=0.5, lr_schedule="multistep", lr_milestones=[2, 3], lr_gamma=0.1)
    lrs = _lrs(cfg, steps_per_epoch=10)
    assert lrs[19] == pytest.approx(LR) and lrs[20] == pytest.approx(LR * 0.1)
    assert lrs[29] == pytest.approx(LR * 0.1) and lrs[30] == pytest.approx(LR * 0.01)


@pytest.mark.parametrize("warmup_epochs", [0, 1.0, 2.0])
def test_step_decays_every_lr_step_size_epochs_from_the_start_of_training(warmup_epochs):
    # A StepLR period shortened by the warm-up decayed at epochs 3, 5, 7, 9 (warm-up 1) and
    # every epoch from epoch 3 (warm-up 2); a period inside the warm-up: the next test.
    cfg = TrainConfig(epochs=10, lr=LR, warmup_epochs=warmup_epochs, lr_schedule="step", lr_step_size=3, lr_gamma=0.1)
    lrs = _lrs(cfg, steps_per_epoch=10)
    after_warmup = [lrs[epoch * 10] for epoch in range(3, 10)]
    assert after_warmup == pytest.approx([LR * 0.1] * 3 + [LR * 0.01] * 3 + [LR * 0.001], rel=1e-9)


def test_step_with_a_period_inside_the_warmup_decays_once_per_period():
    cfg = TrainConfig(epochs=4, lr=LR, warmup_epochs=2.0, lr_schedule="step", lr_step_size=1, lr_gamma=0.5)
    lrs = _lrs(cfg, steps_per_epoch=10)
    # Decays due at epochs 1 and 2 fall inside the warm-up and take effect right after it.
    assert [lrs[e * 10 + 1] for e in (2, 3)] == pytest.approx([LR * 0.25, LR * 0.125], rel=1e-9)


def test_no_warmup_starts_at_the_full_rate():
    lrs = _lrs(TrainConfig(epochs=2, lr=LR, warmup_epochs=0, lr_schedule="constant"), steps_per_epoch=5)
    assert lrs == pytest.approx([LR] * 11)


def test_a_short_warmup_takes_at_least_one_step():
    lrs = _lrs(TrainConfig(epochs=2, lr=LR, warmup_epochs=0.01, warmup_factor=0.5, lr_schedule="constant"),
               steps_per_epoch=5)
    assert lrs[:3] == pytest.approx([LR * 0.5, LR, LR])


def test_a_warmup_longer_than_the_run_ends_on_its_last_step():
    # An evaluate run may be shorter than the warm-up params.yaml sets for the sweep: the ramp
    # is squeezed into the run, so its last step trains at the full rate.
    lrs = _lrs(TrainConfig(epochs=1, lr=LR, warmup_epochs=3.0, warmup_factor=0.5, lr_schedule="constant"),
               steps_per_epoch=4)
    assert lrs == pytest.approx([LR * f for f in (0.5, 2 / 3, 5 / 6, 1.0, 1.0)])
