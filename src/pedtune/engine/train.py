"""Train one configuration for N epochs, evaluating on a held-out part after each epoch.

:func:`fit` is the one training path: the ``train`` stage, every Ray Tune trial and the
final evaluation call it, each passing its own ``on_epoch_end`` hook (log to MLflow,
report to Tune with a checkpoint, collect for the report).
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.optim.lr_scheduler import (
    CosineAnnealingLR,
    LambdaLR,
    LinearLR,
    LRScheduler,
    MultiStepLR,
    SequentialLR,
)
from torch.utils.data import DataLoader

from pedtune import console
from pedtune.config.schema import StudyConfig, TrainConfig
from pedtune.data.dataset import DetectionDataset, SampleSet, collate
from pedtune.device import resolve_device
from pedtune.engine.coco_eval import (
    MASK_THRESHOLD,
    GroundTruth,
    coco_metrics,
    column_major,
    ground_truth,
    to_coco_results,
)
from pedtune.engine.memory import release_freed_heap
from pedtune.engine.original_size import detect
from pedtune.errors import NonFiniteLossError
from pedtune.model.factory import build_model
from pedtune.units import duration

log = console.get(__name__)


@dataclass(frozen=True)
class EpochResult:
    epoch: int  # 1-based: the number of epochs trained so far
    metrics: dict[str, float]


# Called after each epoch with the result and a function that returns the full training
# state (for a checkpoint); building the state only when asked keeps epochs cheap. The state
# references the live tensors: save or copy it before the hook returns.
EpochHook = Callable[[EpochResult, Callable[[], dict[str, Any]]], None]
# Called when an epoch's training is done, before it is evaluated, with the epoch and a function
# that returns the training state without the history (the same tensors as the EpochHook's).
# Nothing changes them until that epoch's EpochHook returns, so a checkpoint can be written
# while the epoch is evaluated instead of after it.
TrainedHook = Callable[[int, Callable[[], dict[str, Any]]], None]


@dataclass
class FitResult:
    model: nn.Module
    history: list[dict[str, float]] = field(default_factory=list)
    wall_time_s: float = 0.0

    @property
    def final(self) -> dict[str, float]:
        return self.history[-1] if self.history else {}


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _constant(_: int) -> float:
    return 1.0


def build_optimizer(params: list[nn.Parameter], cfg: TrainConfig) -> torch.optim.Optimizer:
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)


def build_scheduler(optimizer: torch.optim.Optimizer, cfg: TrainConfig, steps_per_epoch: int) -> LRScheduler:
    """Linear warm-up over ``warmup_epochs``, then the chosen schedule; stepped every iteration.

    The warm-up is measured in epochs, not steps, so every batch size reaches its full learning
    rate at the same point of training: ASHA's rungs then compare trials that have all warmed up
    (100 steps were 1.7 epochs at batch 2 but 6.7 at batch 8 on PennFudanPed's 120 images).
    """
    total = cfg.epochs * steps_per_epoch
    warmup = round(cfg.warmup_epochs * steps_per_epoch)
    if cfg.warmup_epochs > 0:
        warmup = max(warmup, 1)
    warmup = min(warmup, max(total - 1, 0))
    after = max(total - warmup, 1)
    if cfg.lr_schedule == "cosine":
        main: LRScheduler = CosineAnnealingLR(optimizer, T_max=after)
    elif cfg.lr_schedule in ("step", "multistep"):
        decay_epochs = (range(cfg.lr_step_size, cfg.epochs + 1, cfg.lr_step_size) if cfg.lr_schedule == "step"
                        else cfg.lr_milestones)
        # Decays fall on epochs counted from the start of training, but the main schedule counts
        # its steps from the end of the warm-up. (A StepLR period shortened by the warm-up put
        # every decay after the first one early, and decayed every step when the period fell
        # within the warm-up.) Decays due inside the warm-up all apply right after it (a list,
        # not a set: MultiStepLR applies a repeated milestone once per occurrence).
        milestones = sorted(max(m * steps_per_epoch - warmup, 1) for m in decay_epochs)
        main = MultiStepLR(optimizer, milestones=milestones, gamma=cfg.lr_gamma)
    else:
        main = LambdaLR(optimizer, _constant)
    if warmup == 0:
        return main
    ramp = LinearLR(optimizer, start_factor=cfg.warmup_factor, total_iters=warmup)
    return SequentialLR(optimizer, [ramp, main], milestones=[warmup])


def _to_device(images, targets, device: torch.device):
    images = [image.to(device, non_blocking=True) for image in images]
    targets = [{k: v.to(device, non_blocking=True) for k, v in t.items()} for t in targets]
    return images, targets


def train_one_epoch(
    model: nn.Module,
    loader: DataLoader,
    optimizer: torch.optim.Optimizer,
    scheduler: LRScheduler,
    scaler: torch.amp.GradScaler,
    cfg: TrainConfig,
    device: torch.device,
    epoch: int,
    label: str = "train",
) -> dict[str, float]:
    """One pass over ``loader``; returns the mean of each loss term and their sum (``loss``).

    Its progress (``label``, steps, rate, ETA, loss, lr) goes to :mod:`pedtune.console`.
    """
    model.train()
    sums: dict[str, float] = {}
    use_amp = cfg.amp and device.type == "cuda"
    progress = console.Progress(len(loader), label, log)
    for step, (images, targets) in enumerate(progress.wrap(loader), start=1):
        images, targets = _to_device(images, targets, device)
        with torch.autocast(device_type=device.type, enabled=use_amp):
            loss_terms = model(images, targets)
        loss = sum(loss_terms.values())
        # One host sync per step fetches every term, for the finiteness check and the log alike.
        values = dict(zip(loss_terms, torch.stack([v.detach() for v in loss_terms.values()]).float().tolist()))
        loss_value = sum(values.values())
        if not math.isfinite(loss_value):
            raise NonFiniteLossError(epoch, step, values)
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        if cfg.grad_clip_norm > 0:
            scaler.unscale_(optimizer)
            nn.utils.clip_grad_norm_(
                [p for group in optimizer.param_groups for p in group["params"]], cfg.grad_clip_norm
            )
        scaler.step(optimizer)
        scaler.update()
        scheduler.step()
        for name, value in values.items():
            sums[name] = sums.get(name, 0.0) + value
        sums["loss"] = sums.get("loss", 0.0) + loss_value
        progress.show(loss=loss_value, lr=optimizer.param_groups[0]["lr"])
    steps = max(len(loader), 1)
    return {name: total / steps for name, total in sums.items()}


@torch.inference_mode()
def iter_predictions(
    model: nn.Module, loader: DataLoader, device: torch.device, mask_threshold: float = MASK_THRESHOLD,
    original_size: bool = True,
) -> Iterator[tuple[int, dict[str, torch.Tensor]]]:
    """(image index, prediction on CPU) for each image of ``loader``, a batch at a time, at the
    image's original size (where :func:`~pedtune.engine.coco_eval.ground_truth` scores it), or
    with ``original_size=False`` at the resized sample's (to draw on it).

    Masks come back binarised (``> mask_threshold``, bool [N,1,H,W]) where the model computed
    them: a full-size image's float mask probabilities are four times the bytes to copy from
    the GPU and to hold (at 800 px, about 340 MB per image with 100 detections). From a GPU
    they come column-major (:func:`column_major`), the layout COCO's RLE encoder reads.
    """
    model.eval()
    for images, targets in loader:
        images = [image.to(device) for image in images]
        sizes = [(int(t["original_size"][0]), int(t["original_size"][1])) for t in targets]
        if original_size and any(size != tuple(image.shape[-2:]) for size, image in zip(sizes, images)):
            predictions = detect(model, images, sizes)
        else:  # at the sample's own size: what detect would give (tests/unit/test_original_size.py)
            predictions = model(images)
        for target, prediction in zip(targets, predictions):
            masks = prediction["masks"] > mask_threshold
            if masks.is_cuda:
                # The RLE encoder reads masks column by column; transposed here, the copy to
                # the CPU keeps that layout and leaves the CPU only the encoding. On the CPU
                # torch's transpose of bool masks is slower than numpy's in the encoder's path.
                masks = column_major(masks)
            prediction["masks"] = masks
            yield int(target["image_id"]), {k: v.cpu() for k, v in prediction.items()}


def predict(
    model: nn.Module, loader: DataLoader, device: torch.device, original_size: bool = True
) -> list[tuple[int, dict[str, torch.Tensor]]]:
    """Every prediction of :func:`iter_predictions`, in the loader's order."""
    return list(iter_predictions(model, loader, device, original_size=original_size))


def evaluate(
    model: nn.Module, loader: DataLoader, truth: GroundTruth, device: torch.device, label: str = "val",
    per_category: bool = False,
) -> dict[str, float]:
    """COCO AP of the model's predictions on ``loader``; progress per image as ``label``; with
    ``per_category``, each category's AP too (several categories only)."""
    progress = console.Progress(len(loader.dataset), label, log, unit="img")
    predictions = progress.wrap(iter_predictions(model, loader, device))
    # Converted a batch at a time, so only one batch's masks are held at once.
    results = [r for image_id, p in predictions for r in to_coco_results(image_id, p)]
    return coco_metrics(truth, results, per_category=per_category)


def epoch_line(epoch: int, epochs: int, metrics: Mapping[str, float], epoch_times: list[float]) -> str:
    """``epoch 3/10: loss 0.512, val bbox_mAP 0.6123, segm_mAP 0.5521, 203 s (val 7 s); ETA 24 min``."""
    line = (f"epoch {epoch}/{epochs}: loss {metrics['train_loss']:.4g}, val bbox_mAP {metrics['bbox_mAP']:.4f}, "
            f"segm_mAP {metrics['segm_mAP']:.4f}, {duration(metrics['epoch_time_s'])} "
            f"(val {duration(metrics['eval_time_s'])})")
    if epoch < epochs:
        line += f"; ETA {duration((epochs - epoch) * sum(epoch_times) / len(epoch_times))}"
    return line


def _loader(samples: SampleSet, batch_size: int, num_workers: int, hflip_prob: float, shuffle_seed: int | None):
    generator = None
    if shuffle_seed is not None:
        generator = torch.Generator().manual_seed(shuffle_seed)
    return DataLoader(
        DetectionDataset(samples, hflip_prob=hflip_prob),
        batch_size=batch_size,
        shuffle=shuffle_seed is not None,
        generator=generator,
        num_workers=num_workers,
        # A shuffled loader starts its workers afresh every epoch: they are then seeded from the
        # generator that fit re-seeds per epoch, so an epoch's order and flips depend only on the
        # seed and the epoch, and a resumed run continues exactly. (Persistent workers keep the
        # RNG state of epochs a resumed run never ran; forking them is cheap, the cache is
        # inherited.)
        persistent_workers=num_workers > 0 and shuffle_seed is None,
        collate_fn=collate,
    )


def fit(
    config: StudyConfig,
    train_samples: SampleSet,
    eval_samples: SampleSet,
    pretrained: Mapping[str, torch.Tensor] | None = None,
    on_epoch_end: EpochHook | None = None,
    resume: Mapping[str, Any] | None = None,
    on_epoch_trained: TrainedHook | None = None,
) -> FitResult:
    """Train ``config.train`` on ``train_samples``; after each epoch score COCO AP on ``eval_samples``.

    ``resume`` is a state returned through ``on_epoch_end``: training continues after its epoch.
    ``on_epoch_trained`` is called between an epoch's training and its evaluation.
    Raises :class:`NonFiniteLossError` when the loss diverges.
    """
    cfg = config.train
    # What an earlier training in this process freed (a reused Tune actor, a Ray worker
    # running several evaluate runs) is returned before this one allocates its own.
    release_freed_heap()
    started = time.perf_counter()
    seed_everything(cfg.seed)
    device = resolve_device(cfg.device)
    # The heads follow the data: one class per category of the dataset, plus the background.
    model = build_model(config.model, pretrained, num_classes=len(train_samples.categories) + 1).to(device)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = build_optimizer(params, cfg)
    # Shuffling draws from its own generator, so the images each epoch sees depend only on the
    # seed and the epoch number, also for a run resumed from a checkpoint.
    train_loader = _loader(train_samples, cfg.batch_size, config.data.num_workers, cfg.hflip_prob, cfg.seed)
    eval_loader = _loader(eval_samples, cfg.eval_batch_size, config.data.num_workers, 0.0, None)
    scheduler = build_scheduler(optimizer, cfg, len(train_loader))
    scaler = torch.amp.GradScaler(device.type, enabled=cfg.amp and device.type == "cuda")
    truth = ground_truth(eval_samples, cfg.coco_backend)
    history: list[dict[str, float]] = []
    first_epoch = 1
    if resume is not None:
        model.load_state_dict(resume["model"])
        optimizer.load_state_dict(resume["optimizer"])
        scheduler.load_state_dict(resume["scheduler"])
        scaler.load_state_dict(resume["scaler"])
        history = [dict(h) for h in resume["history"]]
        first_epoch = int(resume["epoch"]) + 1

    epoch_times: list[float] = []  # of the epochs this call ran, for the ETA
    for epoch in range(first_epoch, cfg.epochs + 1):
        epoch_start = time.perf_counter()
        train_loader.generator.manual_seed(cfg.seed * 1_000_003 + epoch)
        torch.manual_seed(cfg.seed * 1_000_003 + epoch)  # flips and sampling inside the model
        lr = optimizer.param_groups[0]["lr"]
        losses = train_one_epoch(model, train_loader, optimizer, scheduler, scaler, cfg, device, epoch,
                                 f"epoch {epoch}/{cfg.epochs} train")
        train_time = time.perf_counter() - epoch_start

        def training_state(epoch: int = epoch) -> dict[str, Any]:
            return {
                "epoch": epoch,
                "model": model.state_dict(),
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(),
                "scaler": scaler.state_dict(),
            }

        if on_epoch_trained is not None:
            on_epoch_trained(epoch, training_state)
        scores = evaluate(model, eval_loader, truth, device, f"epoch {epoch}/{cfg.epochs} val")
        metrics = {
            **{f"train_{k}": v for k, v in losses.items()},
            "lr": lr,
            **scores,
            "epoch_time_s": time.perf_counter() - epoch_start,
            "eval_time_s": time.perf_counter() - epoch_start - train_time,
        }
        history.append(metrics)
        epoch_times.append(metrics["epoch_time_s"])
        log.info(epoch_line(epoch, cfg.epochs, metrics, epoch_times))

        def state(training_state: Callable[[], dict[str, Any]] = training_state) -> dict[str, Any]:
            return {**training_state(), "history": history}

        if on_epoch_end is not None:
            on_epoch_end(EpochResult(epoch, metrics), state)
    return FitResult(model=model, history=history, wall_time_s=time.perf_counter() - started)
