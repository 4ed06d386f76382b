"""Pictures for the report: ground truth next to each model's predictions, and scores per seed.

Figures are built with matplotlib's object API (``Figure``), which renders with Agg and
touches no global pyplot state, so this works headless and inside any process.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from matplotlib.figure import Figure
from PIL import ImageColor
from torch.utils.data import Subset
from torchvision.utils import draw_bounding_boxes

from pedtune.config import StudyConfig
from pedtune.data.dataset import DetectionDataset, SampleSet
from pedtune.data.sample import Sample
from pedtune.engine.train import predict
from pedtune.evaluate.runs import inference_loader
from pedtune.model.factory import build_model

PALETTE = ("#e6194b", "#3cb44b", "#4363d8", "#f58231", "#911eb4", "#42d4f4", "#f032e6", "#9a6324")
DPI = 100
MIN_PANEL_INCHES = 3.0  # small images are enlarged so the titles stay readable
MASK_ALPHA = 0.45  # the share of a mask's colour in its pixels
Prediction = dict[str, torch.Tensor]


@dataclass(frozen=True)
class Panel:
    title: str
    image: torch.Tensor  # uint8 [3, H, W]


def blend_masks(
    image: torch.Tensor, masks: torch.Tensor, colors: np.ndarray, alpha: float = MASK_ALPHA
) -> torch.Tensor:
    """``image`` (uint8 [3, H, W]) with each of ``masks`` (bool [N, H, W]) blended in its colour (``colors``:
    uint8 [N, 3]); where masks overlap, black is blended in.

    What torchvision's ``draw_segmentation_masks`` draws, to within 1 in 255, in a fifth of its CPU time on one
    thread (it writes each mask's colour through a boolean index and blends in floats): each pixel's weights
    are looked up from a label image and blended in 16-bit integers, in one pass.
    """
    count = len(masks)
    flags = masks.numpy().view(np.uint8)
    # 0: no mask; i + 1: the i-th mask alone; count + 1: several masks (black, as torchvision draws overlaps)
    label = (flags * np.arange(1, count + 1, dtype=np.uint16)[:, None, None]).max(axis=0)
    label[flags.sum(axis=0, dtype=np.uint16) > 1] = count + 1
    weight = round(alpha * 256)  # out of 256: 255 * 256 + 128 still fits 16 bits
    scale = np.full(count + 2, 256 - weight, np.uint16)
    scale[0] = 256  # a pixel under no mask stays as it is
    offset = np.zeros((count + 2, 3), np.uint16)
    offset[1:count + 1] = colors.astype(np.uint16) * weight
    offset[1:] += 128  # rounds to nearest
    pixels = image.permute(1, 2, 0).numpy()
    blended = (pixels * np.take(scale, label)[..., None] + np.take(offset, label, axis=0)) >> 8
    return torch.from_numpy(blended.astype(np.uint8)).permute(2, 0, 1)


def instance_colors(count: int) -> np.ndarray:
    """uint8 [count, 3]: the palette's colours in turn."""
    palette = np.array([ImageColor.getrgb(color) for color in PALETTE], dtype=np.uint8)
    return palette[np.arange(count) % len(palette)]


def draw_instances(
    image: torch.Tensor, masks: torch.Tensor, boxes: torch.Tensor, labels: list[str] | None = None
) -> torch.Tensor:
    """Masks, then boxes on top, one colour per instance."""
    if len(masks) == 0:  # torchvision warns on an empty set; the picture is the image itself
        return image
    colors = instance_colors(len(masks))
    image = blend_masks(image, masks.bool(), colors)
    return draw_bounding_boxes(image, boxes, labels=labels, colors=[tuple(rgb) for rgb in colors.tolist()], width=2)


def ground_truth_panel(sample: Sample, categories: Mapping[int, str] | None = None) -> Panel:
    names = [categories[int(label)] for label in sample.labels] if categories and len(categories) > 1 else None
    return Panel(f"ground truth: {len(sample.masks)}",
                 draw_instances(sample.image, sample.masks, sample.boxes, names))


def prediction_panel(title: str, image: torch.Tensor, prediction: Prediction, score_threshold: float,
                     categories: Mapping[int, str] | None = None) -> Panel:
    """Detections scoring at least ``score_threshold``, each named by its category (with several) and score."""
    keep = prediction["scores"] >= score_threshold
    scores = prediction["scores"][keep].tolist()
    masks = prediction["masks"][keep, 0]  # binary: predict thresholds them as COCO scoring does
    labels = prediction["labels"][keep].tolist() if "labels" in prediction else [0] * len(scores)
    named = categories is not None and len(categories) > 1
    texts = [f"{categories.get(int(label), label)} {score:.2f}" if named else f"{score:.2f}"  # type: ignore[union-attr]
             for label, score in zip(labels, scores)]
    drawn = draw_instances(image, masks, prediction["boxes"][keep], texts)
    return Panel(f"{title}: {len(scores)} with score ≥ {score_threshold:g}", drawn)


def predict_first(
    state_dict: Mapping[str, torch.Tensor], config: StudyConfig, samples: SampleSet, count: int, device: torch.device
) -> list[Prediction]:
    """Predictions of the model with ``state_dict`` on the samples' first ``count`` samples, in order."""
    model = build_model(config.model, num_classes=len(samples.categories) + 1)
    model.load_state_dict(dict(state_dict))
    loader = inference_loader(Subset(DetectionDataset(samples), range(count)), config)
    # Drawn on the resized sample: predictions at its size, not the image file's.
    predicted = predict(model.to(device), loader, device, original_size=False)
    return [prediction for _, prediction in sorted(predicted, key=lambda p: p[0])]


def save_panels(path: Path, panels: Sequence[Panel]) -> None:
    height, width = panels[0].image.shape[1:]
    panel_width = max(width / DPI, MIN_PANEL_INCHES)
    figure = Figure(figsize=(panel_width * len(panels), panel_width * height / width + 0.5), dpi=DPI)
    for axes, panel in zip(figure.subplots(1, len(panels), squeeze=False)[0], panels):
        axes.imshow(panel.image.permute(1, 2, 0).numpy(), interpolation="nearest")
        axes.set_title(panel.title, fontsize=9)
        axes.axis("off")
    figure.savefig(path, format="png", bbox_inches="tight")


def write_comparison_pictures(
    folder: Path,
    samples: SampleSet,
    models: Mapping[str, Mapping[str, torch.Tensor]],
    config: StudyConfig,
    count: int,
    device: torch.device,
) -> list[Path]:
    """``<stem>.png`` per image: ground truth, then each model (title -> weights) side by side."""
    count = min(count, len(samples))
    predictions = {title: predict_first(state, config, samples, count, device) for title, state in models.items()}
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for index in range(count):
        sample = samples[index]
        panels = [ground_truth_panel(sample, samples.categories)] + [
            prediction_panel(title, sample.image, predicted[index], config.evaluate.score_threshold,
                             samples.categories)
            for title, predicted in predictions.items()
        ]
        path = folder / f"{sample.stem}.png"
        save_panels(path, panels)
        written.append(path)
    return written


def save_per_seed_plot(
    path: Path, scores: Mapping[str, Mapping[int, Mapping[str, float]]], metrics: Sequence[str]
) -> None:
    """One panel per metric: each seed's line joins its score under every config; the mean in black.

    A seed whose run diverged under a config has no point there (``scores`` lacks it).
    """
    names = list(scores)
    seeds = sorted({seed for runs in scores.values() for seed in runs})
    positions = list(range(len(names)))
    figure = Figure(figsize=(4.0 * len(metrics), 3.5), dpi=DPI, layout="constrained")
    for axes, metric in zip(figure.subplots(1, len(metrics), squeeze=False)[0], metrics):
        for index, seed in enumerate(seeds):
            points = [(x, scores[name][seed][metric]) for x, name in enumerate(names) if seed in scores[name]]
            axes.plot(*zip(*points), marker="o", color=PALETTE[index % len(PALETTE)], label=f"seed {seed}")
        means = [
            (x, float(np.mean([run[metric] for run in scores[name].values()])))
            for x, name in enumerate(names)
            if scores[name]
        ]
        if means:
            axes.plot(*zip(*means), marker="D", color="black", linewidth=2.5, label="mean")
        axes.set_xticks(positions, names)
        axes.set_xlim(-0.3, len(names) - 0.7)
        axes.set_ylabel(f"test {metric}")
        axes.grid(alpha=0.3)
        if axes.get_lines():  # none when every run diverged
            axes.legend(fontsize=8)
    figure.savefig(path, format="png")
