"""Training step overhead: the project's ``train_one_epoch`` versus a bare torchvision loop.

Both run the same model from the same state on the same collated batches held in memory,
with the same optimizer; each repetition times every variant once, in a rotated order, and
restores the model and optimizer before each run so every variant does identical work. The
learning rate is constant (no warm-up) and small, so the weights evolve the same way in every
variant and none diverges (the compute of a step does not depend on the learning rate);
only the project's gradient clipping changes the updates, and the ``project_noclip``
variant shows what clipping costs on its own.

The untimed warm-up pass is recorded too (``first_pass_images_per_s``): the first variant
meets every batch shape for the first time, as ``fit``'s early epochs do. With ``--steps``
covering the train split, its rate against the timed ones is the cost of new shapes, and
``--size-divisible`` (the padding multiple of torchvision's transform, 32 by default) tests
whether fewer distinct shapes recover it.

    python -m bench.train_step                     # light model, quick-profile size, CPU
    python -m bench.train_step --arch r50 --device cuda --amp both
    python -m bench.train_step --arch r50 --device cuda --amp on --steps 60 --size-divisible 128
"""

from __future__ import annotations

import contextlib
import copy
import io
import sys
from pathlib import Path
from typing import NamedTuple

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch

from bench import common
from pedtune.config import StudyConfig
from pedtune.engine.train import build_optimizer, build_scheduler, train_one_epoch
from pedtune.model.factory import build_model

VARIANTS = ("bare", "project", "project_noclip")


class StepRates(NamedTuple):
    first_pass: dict[str, float]  # the untimed warm-up pass of each variant
    timed: dict[str, list[float]]  # one entry per repetition
    padded_shapes: int  # distinct H x W of the padded batch tensors the model saw
    size_divisible: int  # the padding multiple the model's transform used


def bare_epoch(model: torch.nn.Module, batches: list[common.Batch], optimizer: torch.optim.Optimizer,
               device: torch.device, amp: bool) -> None:
    """The loop every torchvision tutorial writes (with autocast and a scaler when AMP is on)."""
    model.train()
    scaler = torch.amp.GradScaler(device.type, enabled=amp)
    for images, targets in batches:
        with torch.autocast(device_type=device.type, enabled=amp):
            loss = sum(model(list(images), list(targets)).values())
        optimizer.zero_grad()
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()


def project_epoch(model: torch.nn.Module, batches: list[common.Batch], optimizer: torch.optim.Optimizer,
                  config: StudyConfig, device: torch.device) -> None:
    cfg = config.train
    scheduler = build_scheduler(optimizer, cfg, len(batches))
    scaler = torch.amp.GradScaler(device.type, enabled=cfg.amp and device.type == "cuda")
    with contextlib.redirect_stderr(io.StringIO()):  # its progress lines, as fit prints them
        train_one_epoch(model, batches, optimizer, scheduler, scaler, cfg, device, epoch=1)


def padded_shapes(transform: torch.nn.Module, batches: list[common.Batch]) -> set[tuple[int, int]]:
    """The distinct H x W of the padded batch tensors ``transform`` (a model's) makes of ``batches``."""
    with torch.no_grad():
        return {tuple(transform(list(images))[0].tensors.shape[-2:]) for images, _ in batches}


def to_device(batches: list[common.Batch], device: torch.device) -> list[common.Batch]:
    return [(tuple(i.to(device) for i in images), tuple({k: v.to(device) for k, v in t.items()} for t in targets))
            for images, targets in batches]


def measure(config: StudyConfig, batches: list[common.Batch], pretrained: dict[str, torch.Tensor] | None,
            variants: tuple[str, ...] = VARIANTS, reps: int = 5,
            size_divisible: int | None = None) -> StepRates:
    """Images/s of each variant: its warm-up pass, and one entry per repetition (order rotated each repetition)."""
    device = torch.device(config.train.device)
    amp = config.train.amp and device.type == "cuda"
    batches = to_device(batches, device)
    torch.manual_seed(0)
    model = build_model(config.model, pretrained).to(device)
    if size_divisible:
        model.transform.size_divisible = size_divisible
    optimizer = build_optimizer([p for p in model.parameters() if p.requires_grad], config.train)
    model_state = copy.deepcopy(model.state_dict())
    optimizer_state = copy.deepcopy(optimizer.state_dict())
    noclip = config.model_copy(update={"train": config.train.model_copy(update={"grad_clip_norm": 0.0})})

    def run(variant: str) -> float:
        model.load_state_dict(model_state)
        optimizer.load_state_dict(optimizer_state)
        torch.manual_seed(1)  # RPN/RoI sampling draws the same boxes in every variant
        common.sync(device)
        start = common.timer()
        if variant == "bare":
            bare_epoch(model, batches, optimizer, device, amp)
        else:
            project_epoch(model, batches, optimizer, config if variant == "project" else noclip, device)
        common.sync(device)
        return sum(len(images) for images, _ in batches) / (common.timer() - start)

    # Warm-up: allocator, autotuning, lazy inits and, for the first variant, every batch shape.
    first_pass = {variant: run(variant) for variant in variants}
    rates: dict[str, list[float]] = {v: [] for v in variants}
    for rep in range(reps):
        order = variants[rep % len(variants):] + variants[: rep % len(variants)]
        for variant in order:
            rates[variant].append(run(variant))
    return StepRates(first_pass, rates, len(padded_shapes(model.transform, batches)), model.transform.size_divisible)


def main(argv: list[str] | None = None) -> dict:
    p = common.parser(__doc__.split("\n")[0])
    p.add_argument("--arch", choices=tuple(common.ARCHS), default="light")
    p.add_argument("--steps", type=int, default=6, help="batches per timed run")
    p.add_argument("--reps", type=int, default=5, help="interleaved repetitions")
    p.add_argument("--init", choices=("pretrained", "none"), default="pretrained",
                   help="pretrained: calibrated random weights loaded as if pretrained (frozen BN, "
                        "trainable_backbone_layers), the quick profile's compute; none: weights: none")
    p.add_argument("--size-divisible", type=int, default=None,
                   help="pad batches to multiples of this (torchvision's transform: 32): fewer distinct shapes")
    args = p.parse_args(argv)
    if args.size_divisible is not None and args.size_divisible < 1:
        p.error(f"--size-divisible {args.size_divisible}: must be a positive number of pixels")
    common.setup(args)
    with common.dataset(args) as root:
        results = []
        for amp in common.amp_modes(args):
            config = common.study_config(args, {
                "model": {"arch": common.ARCHS[args.arch]},
                # Constant lr: every variant's weights follow the same path (see the module doc);
                # small, so no variant (two have no clipping) diverges from random weights.
                "train": {"amp": amp, "warmup_epochs": 0, "lr_schedule": "constant", "lr": 1e-4},
            })
            train_samples, _ = common.sample_sets(root, config)
            data = common.batches(train_samples, config.train.batch_size, args.steps)
            pretrained = common.pseudo_pretrained(config, data[:2]) if args.init == "pretrained" else None
            with common.GpuSampler(args.device) as gpu:
                first_pass, rates, shapes, multiple = measure(config, data, pretrained, reps=args.reps,
                                                              size_divisible=args.size_divisible)
            ratios = [p / b for p, b in zip(rates["project"], rates["bare"])]
            ratios_noclip = [p / b for p, b in zip(rates["project_noclip"], rates["bare"])]
            row = {
                "arch": config.model.arch, "amp": amp, "batch_size": config.train.batch_size,
                "image_hw": list(data[0][0][0].shape[1:]), "steps": len(data), "reps": args.reps,
                "padded_shapes": shapes,
                "size_divisible": multiple,
                "first_pass_images_per_s": {v: round(r, 4) for v, r in first_pass.items()},
                "images_per_s": {v: common.stats(r) for v, r in rates.items()},
                "ratio_project_vs_bare": common.stats(ratios),
                "ratio_project_noclip_vs_bare": common.stats(ratios_noclip),
                "gpu_util_pct": gpu.mean, "target": ">= 0.98",
            }
            common.log(f"{args.arch} amp={amp}: project/bare {row['ratio_project_vs_bare']['median']:.3f}, "
                       f"no-clip/bare {row['ratio_project_noclip_vs_bare']['median']:.3f}, "
                       f"bare {row['images_per_s']['bare']['median']:.2f} img/s "
                       f"(first pass over {row['padded_shapes']} padded shapes: {first_pass[VARIANTS[0]]:.2f} img/s)")
            results.append(row)
    return common.emit("train_step", args, {"runs": results})


if __name__ == "__main__":
    main()
