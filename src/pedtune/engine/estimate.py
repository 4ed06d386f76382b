"""How long a configuration takes on this machine, and the guard that stops GPU-sized work on a CPU.

The estimate is measured, not looked up, on a small probe of the configured architecture
(random weights, one image with a short side of ``PROBE_SHORT_SIDE`` px, and 1/``PROBE_ROI_DIVISOR``
of the configured regions per image): one training step and one inference are timed, and their
part that grows with pixels (backbone, FPN and RPN) timed again on its own. That part is scaled
by pixels to the configured image size, the rest (the box and mask heads, which see a fixed
number of regions per image) by regions, then everything by images, epochs, trial-epochs and
runs. The probe costs a fraction of a full-size step, so ``pedtune check`` answers in seconds.
It is rough (one sample of each, random weights, data loading and COCO scoring left out;
tests/unit/test_estimate.py holds it to within ``HONEST_WITHIN``x of a step timed at full size),
but it tells minutes from hours, which the guard needs.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from pedtune import paths
from pedtune.config.load import ConfigError
from pedtune.config.schema import ModelConfig, StudyConfig
from pedtune.data.dataset import image_path, list_stems
from pedtune.data.sample import scale_for
from pedtune.device import resolve_device

PROBE_SHORT_SIDE = 128  # px: the timed image's short side, or min_size when smaller
PROBE_ROI_DIVISOR = 8  # the probe's regions per image: the configured counts divided by this
HONEST_WITHIN = 4.0  # the factor tests/unit/test_estimate.py holds the estimate to (it errs long)
DEFAULT_ASPECT = 4 / 3  # width / height assumed while the dataset is not fetched yet
GPU_SIZED_MIN_SIZE = 800  # ResNet-50 at this short side or more is a GPU configuration
CPU_PATH = ("run the CPU quick study instead: dvc exp run -n cpu-quick $(pedtune profile cpu-quick) "
            "(README, 'Quick start')")


class TooSlowHere(ConfigError):
    """params.yaml asks for GPU-sized work on a machine without CUDA."""


@dataclass(frozen=True)
class StepTimes:
    """One image's training step and inference, timed on ``device`` at ``height`` × ``width``
    with the probe's regions per image; the part of each that grows with pixels (backbone, FPN,
    RPN); and how many times more regions the configuration's heads see in training and inference."""

    device: str
    height: int
    width: int
    train_s: float
    eval_s: float
    train_pixels_s: float
    eval_pixels_s: float
    train_regions: float = 1.0
    eval_regions: float = 1.0

    def scaled(self, height: float, width: float) -> tuple[float, float]:
        """(training step, inference) of one image of ``height`` × ``width`` at the configured
        regions: the pixel part in proportion to pixels, the heads' part to regions."""
        ratio = height * width / (self.height * self.width)

        def at_size(total: float, pixels: float, regions: float) -> float:
            pixels = min(pixels, total)
            return (total - pixels) * regions + pixels * ratio

        return (at_size(self.train_s, self.train_pixels_s, self.train_regions),
                at_size(self.eval_s, self.eval_pixels_s, self.eval_regions))


@dataclass(frozen=True)
class Workload:
    images: dict[str, int]  # train / val / test
    height: float  # the mean image as the model sees it (after resizing)
    width: float
    basis: str  # where the numbers come from


@dataclass(frozen=True)
class Estimate:
    times: StepTimes
    workload: Workload
    epoch_s: float  # one epoch of the train stage: training on train, scoring val
    train_s: float
    trial_epochs: float
    tune_s: float
    evaluate_s: float

    @property
    def total_s(self) -> float:
        return self.train_s + self.tune_s + self.evaluate_s

    def describe(self) -> str:
        from pedtune.units import duration

        return (f"train stage {duration(self.train_s)}, tune {duration(self.tune_s)}, "
                f"evaluate {duration(self.evaluate_s)}; the study about {duration(self.total_s)}")

    def basis(self, config: StudyConfig) -> str:
        t, w = self.times, self.workload
        return (
            f"a rough estimate: one training step and one inference of {config.model.arch} (random weights) "
            f"timed here on {t.device} at {t.height}x{t.width} px with 1/{PROBE_ROI_DIVISOR} of the regions "
            f"({t.train_s:.2f} s and {t.eval_s:.2f} s), the backbone's share scaled to {w.height:.0f}x{w.width:.0f} px "
            f"and the heads' to the configured regions, "
            f"{w.images['train']} train + {w.images['val']} val images "
            f"({w.basis}) x {config.train.epochs} epochs; the sweep as {self.trial_epochs:.0f} trial-epochs "
            f"({sweep_basis(config)}), one trial at a time; data loading and COCO scoring not included"
        )


def probe_model(model: ModelConfig, height: int, width: int) -> tuple[ModelConfig, float, float]:
    """The probe: ``model`` at ``height`` × ``width`` with 1/``PROBE_ROI_DIVISOR`` of its regions per
    image, and how many times more regions the configuration's heads see (training, inference)."""
    train = max(1, model.box_batch_size_per_image // PROBE_ROI_DIVISOR)
    proposals = max(1, model.rpn_test_proposals // PROBE_ROI_DIVISOR)
    detections = max(1, model.detections_per_img // PROBE_ROI_DIVISOR)
    small = model.model_copy(update={"weights": "none", "min_size": height, "max_size": max(height, width),
                                     "box_batch_size_per_image": train, "rpn_test_proposals": proposals,
                                     "detections_per_img": detections})
    # Inference runs the box head on every proposal and the mask head on every detection: the
    # larger of the two ratios, so the estimate errs long.
    inference = max(model.rpn_test_proposals / proposals, model.detections_per_img / detections)
    return small, model.box_batch_size_per_image / train, inference


def measure(model: ModelConfig, device: torch.device, aspect: float = DEFAULT_ASPECT) -> StepTimes:
    """Time one training step and one inference of the probe of ``model`` on a random image (seconds)."""
    from pedtune.model.factory import build_model

    height = min(PROBE_SHORT_SIDE, model.min_size)
    width = round(height * aspect)
    small, train_regions, eval_regions = probe_model(model, height, width)
    with torch.random.fork_rng(devices=[]):  # the same random weights every time: a repeatable estimate
        torch.manual_seed(0)
        net = build_model(small).to(device)
    generator = torch.Generator().manual_seed(0)
    image = torch.rand(3, height, width, generator=generator).to(device)
    mask = torch.zeros(1, height, width, dtype=torch.uint8)
    mask[0, height // 8 : height * 7 // 8, width // 3 : width * 2 // 3] = 1
    target = {"boxes": torch.tensor([[width / 3, height / 8, width * 2 / 3, height * 7 / 8]]),
              "labels": torch.ones(1, dtype=torch.int64), "masks": mask}
    target = {k: v.to(device) for k, v in target.items()}

    def timed(step) -> float:
        start = time.perf_counter()
        step()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        return time.perf_counter() - start

    def train_step() -> None:
        net.train()
        sum(net([image], [target]).values()).backward()

    def inference() -> None:
        net.eval()
        with torch.inference_mode():
            net([image])

    def pixels(training: bool) -> None:
        """What grows with pixels: resizing, the backbone with its FPN, and the RPN."""
        images, targets = net.transform([image], [target] if training else None)
        features = net.backbone(images.tensors)
        _, losses = net.rpn(images, features, targets)
        if training:
            (sum(losses.values()) + sum(feature.mean() for feature in features.values())).backward()

    def pixels_step() -> None:
        net.train()
        pixels(True)

    def pixels_inference() -> None:
        net.eval()
        with torch.inference_mode():
            pixels(False)

    train_s, eval_s = timed(train_step), timed(inference)
    train_pixels_s, eval_pixels_s = timed(pixels_step), timed(pixels_inference)
    label = f"{device.type} ({torch.get_num_threads()} threads)" if device.type == "cpu" else str(device)
    return StepTimes(label, height, width, train_s, eval_s, train_pixels_s, eval_pixels_s, train_regions, eval_regions)


def workload(config: StudyConfig, split_file: Path = paths.SPLIT_FILE, data_root: Path = paths.DATA_ROOT) -> Workload:
    """Images per part and their mean size as the model sees them: from the fetched dataset and
    split where present, else from params.yaml."""
    model = config.model
    root = data_root if (data_root / "PNGImages").is_dir() else None
    if split_file.is_file():
        from pedtune.data.split import read_split

        try:
            split, _ = read_split(split_file)
            images = {"train": len(split.train), "val": len(split.val), "test": len(split.test)}
            basis = str(split_file)
        except Exception:  # an unreadable split is the split stage's error to report, not this one's
            images, basis = _images_from_params(config), "data and split params"
    else:
        images, basis = _images_from_params(config), "data and split params"
    if root is not None:
        from PIL import Image

        sizes = []
        for stem in list_stems(root):
            with Image.open(image_path(root, stem)) as image:  # reads the header only
                width, height = image.size
            scale = scale_for(height, width, model.min_size, model.max_size)
            sizes.append((height * scale, width * scale))
        height = sum(h for h, _ in sizes) / len(sizes)
        width = sum(w for _, w in sizes) / len(sizes)
        basis += f", image sizes of {root}"
    else:
        if config.data.source == "synthetic":
            raw_h, raw_w = config.data.synthetic.height, config.data.synthetic.width
        else:
            raw_h, raw_w = 3, 4  # PennFudanPed's are about 4:3 (width:height)
        scale = scale_for(raw_h, raw_w, model.min_size, model.max_size)
        height, width = raw_h * scale, raw_w * scale
    return Workload(images, height, width, basis)


def _images_from_params(config: StudyConfig) -> dict[str, int]:
    data = config.data
    total = data.synthetic.num_images if data.source == "synthetic" else data.expected_images or 170
    split = data.split
    train, val = round(total * split.train), round(total * split.val)
    return {"train": train, "val": val, "test": total - train - val}


def sweep_trial_epochs(config: StudyConfig) -> float:
    """Epochs the sweep trains over all its trials: all of them for FIFO; for ASHA what
    successive halving keeps (each rung passes 1 in ``reduction_factor`` trials on)."""
    tune = config.tune
    if tune.scheduler != "asha":
        return float(tune.num_samples * config.train.epochs)
    max_t, grace, factor = config.asha_max_t, tune.asha.grace_period, tune.asha.reduction_factor
    milestones = []
    milestone = grace
    while milestone < max_t:
        milestones.append(milestone)
        milestone = math.ceil(milestone * factor)
    total, alive, done = 0.0, float(tune.num_samples), 0
    for milestone in [*milestones, max_t]:
        total += alive * (milestone - done)
        done = milestone
        alive /= factor
    return total


def sweep_basis(config: StudyConfig) -> str:
    tune = config.tune
    if tune.scheduler != "asha":
        return f"{tune.num_samples} trials x {config.train.epochs} epochs"
    return (f"{tune.num_samples} trials, ASHA keeping 1 in {tune.asha.reduction_factor:g} at each rung "
            f"from epoch {tune.asha.grace_period}")


def estimate(config: StudyConfig, times: StepTimes, work: Workload) -> Estimate:
    train_img, eval_img = times.scaled(work.height, work.width)
    images = work.images
    epoch_s = images["train"] * train_img + images["val"] * eval_img
    trial_epochs = sweep_trial_epochs(config)
    evaluate = config.evaluate
    train_on = images["train"] + (images["val"] if evaluate.train_on == "train+val" else 0)
    runs = 2 * len(evaluate.seeds)  # the initial and the tuned configuration
    run_epochs = evaluate.epochs or config.train.epochs
    evaluate_s = runs * (run_epochs * (train_on * train_img + images["val"] * eval_img) + images["test"] * eval_img)
    return Estimate(times, work, epoch_s, epoch_s * config.train.epochs, trial_epochs, trial_epochs * epoch_s,
                    evaluate_s)


def measure_estimate(config: StudyConfig, device: torch.device) -> Estimate:
    work = workload(config)
    return estimate(config, measure(config.model, device, work.width / work.height), work)


def gpu_sized(config: StudyConfig, stage: str) -> list[str]:
    """Why ``stage`` of this configuration wants a GPU that this machine lacks (empty: it does not).

    Only work that would run here counts: with ``tune.ray_address`` the trials and evaluation
    runs go to the cluster. ``train.device: cpu`` says the CPU is meant, except for trials
    that ask for a GPU, which no local Ray could place (evaluation runs that do not fit one at
    a time run in this process).
    """
    local_training = stage in ("check", "train") or not config.tune.ray_address
    reasons = []
    model = config.model
    if local_training and config.train.device == "auto" and model.arch.startswith("maskrcnn_resnet50") \
            and model.min_size >= GPU_SIZED_MIN_SIZE:
        reasons.append(f"{model.arch} at {model.min_size}-{model.max_size} px with train.device: auto")
    gpu = config.tune.resources_per_trial.gpu
    if stage in ("check", "tune") and not config.tune.ray_address and gpu > 0:
        reasons.append(f"tune.resources_per_trial.gpu: {gpu:g} (a GPU for every trial)")
    return reasons


def guard(config: StudyConfig, stage: str) -> Estimate | None:
    """Raise :class:`TooSlowHere` when ``stage`` would run GPU-sized work on this machine's CPU.

    Returns the measured estimate when one was made (``check`` always makes one), else None:
    on a machine with CUDA, and for work that fits a CPU, nothing is timed.
    """
    cuda = torch.cuda.is_available()
    reasons = [] if cuda else gpu_sized(config, stage)
    if not reasons and stage != "check":
        return None
    device = resolve_device(config.train.device) if cuda else torch.device("cpu")
    found = measure_estimate(config, device)
    if not reasons:
        return found
    from pedtune.units import duration

    work = {"train": found.train_s, "tune": found.tune_s, "evaluate": found.evaluate_s}
    timing = found.describe() if stage == "check" else f"the {stage} stage about {duration(work[stage])}"
    override = ("to train this configuration on the CPU anyway, set train.device: cpu"
                if config.train.device == "auto" else "")
    if any(reason.startswith("tune.resources_per_trial.gpu") for reason in reasons):
        extra = "to run trials on the CPU, set tune.resources_per_trial.gpu: 0"
        override = f"{override}; {extra}" if override else extra
    raise TooSlowHere(
        f"params.yaml is sized for a GPU ({'; '.join(reasons)}) and this machine has no CUDA device.\n"
        f"On its CPU: {timing} ({found.basis(config)}).\n"
        f"On a CPU, {CPU_PATH}; {override}."
    )
