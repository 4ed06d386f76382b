"""How long a configuration takes on this machine, and the guard that stops GPU-sized work on a CPU.

The estimate is the configured model's cost per image in floating-point operations, counted
ahead of time (:mod:`pedtune.engine.model_cost`: the backbone's part scaled to the image size,
the heads' to the configured regions), divided by this machine's speed, measured on a small
plain-torch probe of convolutions (its training step and inference, each timed after a
warm-up), then multiplied by images, epochs, trial-epochs and runs. Nothing imports torchvision
or builds the model, so ``pedtune check`` answers in a few seconds. It is rough (the probe's
speed stands for the whole model's, data loading and COCO scoring left out, the regions at
their upper bounds; tests/unit/test_estimate.py holds it to within ``HONEST_WITHIN``x of a step
timed at full size), but it tells minutes from hours, which the guard needs.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from pedtune import paths
from pedtune.config.load import ConfigError
from pedtune.config.schema import StudyConfig
from pedtune.data.scale import scale_for
from pedtune.device import resolve_device
from pedtune.engine.model_cost import PROBE_SHAPE, TRAIN_FACTOR, probe_net, read_costs

PROBE_REPEATS = 2  # timed calls of each probe step after its warm-up; the fastest counts
HONEST_WITHIN = 4.0  # the factor tests/unit/test_estimate.py holds the estimate to
DEFAULT_ASPECT = 4 / 3  # width / height assumed while the dataset is not fetched yet
GPU_SIZED_MIN_SIZE = 800  # ResNet-50 at this short side or more is a GPU configuration
CPU_PATH = ("run the CPU quick study instead: dvc exp run -n cpu-quick $(pedtune profile cpu-quick) "
            "(README, 'Quick start')")


class TooSlowHere(ConfigError):
    """params.yaml asks for GPU-sized work on a machine without CUDA."""


@dataclass(frozen=True)
class MachineSpeed:
    """FLOPs a second of the probe's training step and inference on ``device``."""

    device: str
    train: float
    inference: float


@dataclass(frozen=True)
class Workload:
    images: dict[str, int]  # train / val / test
    height: float  # the mean image as the model sees it (after resizing)
    width: float
    basis: str  # where the numbers come from


@dataclass(frozen=True)
class Estimate:
    speed: MachineSpeed
    workload: Workload
    image_flops: tuple[float, float]  # one image's training step and inference
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
        speed, w = self.speed, self.workload
        train, inference = self.image_flops
        return (
            f"a rough estimate: {config.model.arch} at {w.height:.0f}x{w.width:.0f} px with the configured regions "
            f"counts {train / 1e9:.0f} GFLOP a training step and {inference / 1e9:.0f} an inference "
            f"(pedtune/engine/model_costs.json), at the speed a small convolution probe ran here on {speed.device} "
            f"({speed.train / 1e9:.1f} GFLOP/s training, {speed.inference / 1e9:.1f} inference); "
            f"{w.images['train']} train + {w.images['val']} val images "
            f"({w.basis}) x {config.train.epochs} epochs; the sweep as {self.trial_epochs:.0f} trial-epochs "
            f"({sweep_basis(config)}), one trial at a time; data loading and COCO scoring not included"
        )


def measure(device: torch.device) -> MachineSpeed:
    """The probe's speed on ``device``: its training step and inference, each timed after a warm-up."""
    with torch.random.fork_rng(devices=[]):  # the same random weights every time: a repeatable estimate
        torch.manual_seed(0)
        net = probe_net().to(device)
        inputs = torch.rand(PROBE_SHAPE).to(device)

    def once(step) -> float:
        start = time.perf_counter()
        step()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        return time.perf_counter() - start

    def timed(step) -> float:
        once(step)  # the first call allocates and picks kernels
        return min(once(step) for _ in range(PROBE_REPEATS))  # the least disturbed by other work

    def train_step() -> None:
        net.train()
        net(inputs).sum().backward()

    def inference() -> None:
        net.eval()
        with torch.inference_mode():
            net(inputs)

    probe = read_costs().probe
    label = f"{device.type} ({torch.get_num_threads()} threads)" if device.type == "cpu" else str(device)
    return MachineSpeed(label, TRAIN_FACTOR * probe / timed(train_step), probe / timed(inference))


def workload(config: StudyConfig, split_file: Path = paths.SPLIT_FILE, data_root: Path = paths.DATA_ROOT) -> Workload:
    """Images per part and their mean size as the model sees them: from the fetched dataset and
    split where present, else from params.yaml."""
    model = config.model
    images_folder = data_root / "PNGImages"
    root = data_root if images_folder.is_dir() else None
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
        for path in sorted(images_folder.glob("*.png")):
            with Image.open(path) as image:  # reads the header only
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


def estimate(config: StudyConfig, speed: MachineSpeed, work: Workload) -> Estimate:
    flops = read_costs().archs[config.model.arch].image_flops(config.model, work.height, work.width)
    train_img, eval_img = flops[0] / speed.train, flops[1] / speed.inference
    images = work.images
    epoch_s = images["train"] * train_img + images["val"] * eval_img
    trial_epochs = sweep_trial_epochs(config)
    evaluate = config.evaluate
    train_on = images["train"] + (images["val"] if evaluate.train_on == "train+val" else 0)
    runs = 2 * len(evaluate.seeds)  # the initial and the tuned configuration
    run_epochs = evaluate.epochs or config.train.epochs
    evaluate_s = runs * (run_epochs * (train_on * train_img + images["val"] * eval_img) + images["test"] * eval_img)
    return Estimate(speed, work, flops, epoch_s, epoch_s * config.train.epochs, trial_epochs,
                    trial_epochs * epoch_s, evaluate_s)


def measure_estimate(config: StudyConfig, device: torch.device) -> Estimate:
    return estimate(config, measure(device), workload(config))


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
