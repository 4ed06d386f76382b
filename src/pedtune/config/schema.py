"""The typed shape of ``params.yaml``.

Every section forbids unknown keys so that a typo (``learning_rate`` for ``lr``) fails
before any work starts instead of being silently ignored. A default here is the value the
shipped ``params.yaml`` gives (tests/unit/test_config.py checks), so a key left out of the
file means what docs/params.md (generated from the descriptions here) says.
"""

from __future__ import annotations

import math
import os
import re
from decimal import Decimal
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

PENN_FUDAN_URL = "https://www.cis.upenn.edu/~jshi/ped_html/PennFudanPed.zip"
PENN_FUDAN_MD5 = "5aaa3dee905cef73325923716e38fc6d"
PENN_FUDAN_SIZE = 53_723_336
PENN_FUDAN_IMAGES = 170

Arch = Literal["maskrcnn_resnet50_fpn", "maskrcnn_resnet50_fpn_v2", "maskrcnn_mobilenet_v3_large_fpn"]
CocoBackend = Literal["pycocotools", "faster_coco_eval"]
WeightsChoice = Literal["coco", "imagenet_backbone", "none"]
# Backbone stages torchvision counts for ``trainable_layers`` (conv1 + 4 ResNet stages; the
# MobileNetV3 stem, its 4 down-sampling stages and its last conv): the most that can be trained.
BACKBONE_STAGES: dict[str, int] = {
    "maskrcnn_resnet50_fpn": 5,
    "maskrcnn_resnet50_fpn_v2": 5,
    "maskrcnn_mobilenet_v3_large_fpn": 6,
}
PositiveInt = Annotated[int, Field(gt=0)]
NonNegativeInt = Annotated[int, Field(ge=0)]
Fraction = Annotated[float, Field(ge=0.0, le=1.0)]
# numpy's generators take no negative seed, HyperOpt and Optuna none from 2**32 up.
Seed = Annotated[int, Field(ge=0, lt=2**32)]


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SyntheticConfig(Section):
    """A generated dataset in the exact PennFudanPed layout, for tests and quick runs."""

    num_images: Annotated[int, Field(ge=3)] = Field(24, description="Images generated (`data.source: synthetic`).")
    height: Annotated[int, Field(ge=32)] = Field(96, description="Height of each generated image, in pixels.")
    width: Annotated[int, Field(ge=32)] = Field(128, description="Width of each generated image, in pixels.")
    max_instances: Annotated[int, Field(ge=1, le=254)] = Field(
        3,
        description="Most pedestrians drawn in one generated image (each image has 1 to this many).",
    )
    seed: Seed = Field(0, description="Seed of the generated dataset.")
    categories: Annotated[int, Field(ge=1, le=20)] = Field(
        3,
        description=(
            "Object categories of a generated COCO dataset (`data.format: coco`); the PennFudan layout has one."
        ),
    )


class AnnotationFiles(Section):
    """A dataset that ships its own split: one COCO JSON per part."""

    train: Annotated[str, Field(min_length=1)] = Field(description="COCO JSON of the train part.")
    val: Annotated[str, Field(min_length=1)] = Field(description="COCO JSON of the val part.")
    test: Annotated[str, Field(min_length=1)] = Field(description="COCO JSON of the test part.")


class SplitConfig(Section):
    train: Fraction = Field(
        0.7,
        description="Fraction of the images in the train split (each fraction > 0; the three sum to 1).",
    )
    val: Fraction = Field(
        0.15,
        description="Fraction in the val split, on which every epoch and every tuning trial is scored.",
    )
    test: Fraction = Field(0.15, description="Fraction in the test split, touched only by the final evaluation.")
    seed: Seed = Field(42, description="Seed of the split (stratified by the Fudan and Penn collections).")

    @model_validator(mode="after")
    def _fractions_sum_to_one(self) -> "SplitConfig":
        total = self.train + self.val + self.test
        if not math.isclose(total, 1.0, abs_tol=1e-6):
            raise ValueError(f"train + val + test must sum to 1, got {total:g}")
        if self.train <= 0 or self.val <= 0 or self.test <= 0:
            raise ValueError("train, val and test fractions must each be > 0")
        return self


class DataConfig(Section):
    format: Literal["pennfudan", "coco"] = Field(
        "pennfudan",
        description=(
            "`pennfudan`: PennFudanPed's layout (`PNGImages/`, `PedMasks/`, one class). `coco`: any COCO-format "
            "instance-segmentation dataset, images in `local_path` and annotations in `annotations` (docs/data.md)."
        ),
    )
    source: Literal["url", "zip", "dir", "synthetic"] = Field(
        "url",
        description=(
            "`url` downloads the official zip, `zip` reads a local zip, `dir` an extracted `PennFudanPed` folder"
            " (with `format: coco`, the images folder), `synthetic` generates data in the chosen format (tests,"
            " smoke runs)."
        ),
    )
    url: str = Field(PENN_FUDAN_URL, description="Where `source: url` downloads the zip from.")
    md5: Annotated[str, Field(pattern=r"^[0-9a-f]{32}$")] = Field(
        PENN_FUDAN_MD5,
        description="Expected md5 of the zip (`url` and `zip`); a mismatch stops the fetch.",
    )
    size_bytes: PositiveInt | None = Field(
        PENN_FUDAN_SIZE,
        description="Expected size of the zip in bytes; `null` skips the check.",
    )
    local_path: str = Field(
        "",
        description=(
            "The zip (`source: zip`) or the extracted `PennFudanPed` folder (`source: dir`; with `format: coco`, the"
            " images folder, which `file_name` in the JSON is relative to). DVC tracks the path, not the files"
            " there: after changing them in place, run `dvc repro -f fetch`."
        ),
    )
    annotations: str | AnnotationFiles = Field(
        "",
        description=(
            "`format: coco` only: the COCO JSON file, or `{train: ..., val: ..., test: ...}` when the dataset ships "
            "its own split (then the split stage takes it as it is). With `source: zip` or `url`, paths inside "
            "the archive."
        ),
    )
    images: str = Field(
        "",
        description=(
            "`format: coco` with `source: zip` or `url`: the images folder inside the archive (`file_name` in the "
            "JSON is relative to it); empty: the archive's top level."
        ),
    )
    drop_negatives: bool = Field(
        False,
        description=(
            "`format: coco`: leave out images without any annotation (by default they train and score as "
            "negatives)."
        ),
    )
    expected_images: PositiveInt | None = Field(
        PENN_FUDAN_IMAGES,
        description=(
            "How many images a `url`, `zip` or `dir` copy must hold (any other count stops the fetch); `null` "
            "accepts any count, for a subset or a dataset of your own."
        ),
    )
    synthetic: SyntheticConfig = Field(SyntheticConfig(), description="The generated dataset (`source: synthetic`).")
    split: SplitConfig = Field(SplitConfig(), description="The seeded train/val/test split (`data/split.json`).")
    cache: bool = Field(True, description="Decode and resize every image once and keep it in memory.")
    cache_budget_gib: Annotated[float, Field(gt=0.0)] | None = Field(
        8.0,
        description=(
            "The most memory, in GiB, that `cache: true` may take in one process holding the decoded samples (the "
            "stage's, and each running Tune trial's): the whole split's images and masks at the model's input size, "
            "estimated from the image sizes before anything is decoded; a larger estimate stops the stage (and "
            "`pedtune check`) before any training. `null`: no limit."
        ),
    )
    num_workers: NonNegativeInt = Field(2, description="DataLoader worker processes (0: load in the training process).")

    @model_validator(mode="after")
    def _local_path_for_local_sources(self) -> "DataConfig":
        if self.source in ("zip", "dir") and not self.local_path:
            raise ValueError(f"source '{self.source}' needs data.local_path")
        return self

    @model_validator(mode="after")
    def _annotations_for_coco(self) -> "DataConfig":
        if self.format == "coco" and self.source != "synthetic" and not self.annotations:
            raise ValueError("format 'coco' needs data.annotations (the COCO JSON file, or {train, val, test})")
        if self.format == "pennfudan" and self.annotations:
            raise ValueError("data.annotations is for format 'coco'; PennFudanPed's layout has its own masks")
        return self


class ModelConfig(Section):
    arch: Arch = Field(
        "maskrcnn_resnet50_fpn",
        description=(
            "The torchvision Mask R-CNN: `maskrcnn_resnet50_fpn`, `maskrcnn_resnet50_fpn_v2` or the light "
            "`maskrcnn_mobilenet_v3_large_fpn`."
        ),
    )
    weights: WeightsChoice = Field(
        "coco",
        description=(
            "`coco` (torchvision's COCO detector; for the light model the COCO Faster R-CNN, with a new mask "
            "head), `imagenet_backbone`, or `none` (random weights; works offline)."
        ),
    )
    min_size: Annotated[int, Field(ge=32)] = Field(
        800,
        description=(
            "Images are resized once, when decoded, so that the short side is `min_size` (long side at most "
            "`max_size`); COCO AP is scored at that scale too."
        ),
    )
    max_size: Annotated[int, Field(ge=32)] = Field(
        1333,
        description="The most the long side of a resized image may measure.",
    )
    trainable_backbone_layers: NonNegativeInt = Field(
        3,
        description=(
            "Backbone stages trained with pretrained weights, counted from the top (at most 5 for the ResNet-50 "
            "archs, 6 for MobileNetV3); the rest and every batch norm stay frozen. With `weights: none` "
            "everything is trained."
        ),
    )
    detections_per_img: PositiveInt = Field(100, description="Detections kept per image at evaluation.")
    rpn_test_proposals: PositiveInt = Field(
        1000,
        description=(
            "Region proposals kept at inference, per feature level before the RPN's NMS and per image after it "
            "(training keeps torchvision's 2000); fewer make evaluation cheaper."
        ),
    )
    box_batch_size_per_image: PositiveInt = Field(
        512,
        description=(
            "Region proposals sampled per image to train the box and mask heads (torchvision's "
            "`box_batch_size_per_image`, a quarter of them positive at most); fewer make a training step cheaper, "
            "on the CPU most of all."
        ),
    )

    @model_validator(mode="after")
    def _sizes_ordered(self) -> "ModelConfig":
        if self.max_size < self.min_size:
            raise ValueError(f"max_size ({self.max_size}) must be >= min_size ({self.min_size})")
        return self

    @model_validator(mode="after")
    def _trainable_layers_exist(self) -> "ModelConfig":
        stages = BACKBONE_STAGES[self.arch]
        if self.trainable_backbone_layers > stages:
            raise ValueError(f"trainable_backbone_layers ({self.trainable_backbone_layers}) exceeds the "
                             f"{stages} backbone stages of {self.arch}")
        return self


class TrainConfig(Section):
    """One training configuration: the keys a search space may override."""

    epochs: PositiveInt = Field(10, description="Epochs to train; also the length of every tuning trial.")
    batch_size: PositiveInt = Field(2, description="Images per training step.")
    optimizer: Literal["sgd", "adamw"] = Field("sgd", description="`sgd` or `adamw`.")
    lr: Annotated[float, Field(gt=0.0, le=10.0)] = Field(0.005, description="Learning rate after warm-up.")
    momentum: Annotated[float, Field(ge=0.0, lt=1.0)] = Field(0.9, description="SGD's momentum (unused by AdamW).")
    weight_decay: Annotated[float, Field(ge=0.0)] = Field(0.0005, description="Weight decay of the optimizer.")
    lr_schedule: Literal["cosine", "step", "multistep", "constant"] = Field(
        "cosine",
        description="The schedule after warm-up: `cosine`, `step`, `multistep` or `constant`.",
    )
    lr_step_size: PositiveInt = Field(
        3,
        description=(
            "`step`: multiply the learning rate by `lr_gamma` every this many epochs, counted from the start of "
            "training."
        ),
    )
    lr_milestones: list[PositiveInt] = Field(
        [6, 8],
        description=(
            "`multistep`: the epochs at which the learning rate is multiplied by `lr_gamma` (a decay due inside "
            "the warm-up applies as it ends)."
        ),
    )
    lr_gamma: Annotated[float, Field(gt=0.0, le=1.0)] = Field(
        0.1,
        description="The factor of each `step` or `multistep` decay.",
    )
    warmup_epochs: Annotated[float, Field(ge=0.0)] = Field(
        1.0,
        description=(
            "Linear warm-up from `lr × warmup_factor`, in epochs (fractions allowed; capped at the run's length),"
            " so every batch size of a sweep has warmed up by the same rung."
        ),
    )
    warmup_factor: Annotated[float, Field(gt=0.0, le=1.0)] = Field(
        0.001,
        description="The share of `lr` the warm-up starts from.",
    )
    grad_clip_norm: Annotated[float, Field(ge=0.0)] = Field(
        10.0,
        description="Clip the gradient norm to this; 0 disables clipping.",
    )
    hflip_prob: Fraction = Field(0.5, description="Probability of a horizontal flip of a training image.")
    amp: bool = Field(True, description="Mixed precision on CUDA (ignored on the CPU).")
    seed: Seed = Field(
        0,
        description=(
            "Seeds torch, numpy, Python and the shuffling of every epoch, so a resumed run continues exactly on "
            "the CPU (CUDA's kernels are not all deterministic). Every tuning trial trains with it."
        ),
    )
    device: Literal["auto", "cpu", "cuda"] = Field("auto", description="`auto` (CUDA if available), `cpu` or `cuda`.")
    threads: PositiveInt | None = Field(
        None,
        description=(
            "torch's CPU threads in the train stage, every trial and every `evaluate` run; null: "
            "`tune.resources_per_trial.cpu` rounded down (at least 1). On the CPU the thread count changes the "
            "numbers (sums are split differently), so it comes from params, never from the cores a run happens "
            "to get: the same params give the same figures on the same kind of machine."
        ),
    )
    eval_batch_size: PositiveInt = Field(2, description="Images per step at evaluation.")
    coco_backend: CocoBackend = Field(
        "pycocotools",
        description=(
            "Which library computes COCO AP: `pycocotools` or `faster_coco_eval` (the same AP, scored faster: "
            "[performance](performance.md))."
        ),
    )

    @field_validator("lr_milestones")
    @classmethod
    def _milestones_increasing(cls, value: list[int]) -> list[int]:
        if value != sorted(set(value)):
            raise ValueError("lr_milestones must be strictly increasing")
        return value


class MlflowConfig(Section):
    tracking_uri: str = Field(
        "sqlite:///mlruns/mlflow.db",
        description=(
            "The MLflow store: an SQLite file (a relative path starts at the repository root) or a tracking "
            "server's `http://host:port`."
        ),
    )
    artifact_location: str = Field("mlruns/artifacts", description="Where a new MLflow experiment keeps its artifacts.")
    experiment: Annotated[str, Field(min_length=1)] = Field("pedtune", description="The MLflow experiment's name.")
    connect_timeout_s: Annotated[float, Field(gt=0)] = Field(
        10.0,
        description="How long the stages wait for a tracking server to answer before they stop.",
    )
    registered_model: Annotated[str, Field(min_length=1)] = Field(
        "pedtune-maskrcnn",
        description=(
            "The registered model the evaluate stage adds its kept model to, as a new version "
            "(`models:/<name>@champion` loads the best on the same dataset and split; docs/model.md)."
        ),
    )

    @field_validator("tracking_uri")
    @classmethod
    def _no_credentials_in_uri(cls, value: str) -> str:
        # The URI is logged, recorded in params and dvc.lock: a password in it would land in all of them.
        parts = urlsplit(value)
        if parts.scheme in ("http", "https") and (parts.username or parts.password):
            raise ValueError(
                "the tracking URI carries credentials (user:password@host), which would be recorded in params.yaml, "
                "dvc.lock and the logs: write it as http(s)://host:port and give the credentials through the "
                "MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD environment variables (or ~/.mlflow/credentials)"
            )
        return value


QUANTIZED = ("qloguniform", "quniform")


def quantize(value: float, lower: float, upper: float, q: float) -> float:
    """The grid point ``tune.qloguniform``/``tune.quniform`` would give for ``value``.

    Rounds to the nearest multiple of ``q`` (``np.round(x / q) * q``, as Ray does), clipped
    to the bounds (multiples of ``q`` themselves), then to ``q``'s decimals so the value
    reads as written (0.005, not 0.005000000000000001).
    """
    on_grid = float(np.clip(np.round(value / q) * q, lower, upper))
    decimals = max(0, -Decimal(str(q)).normalize().as_tuple().exponent)
    return round(on_grid, decimals)


def _on_grid(bound: float, q: float) -> bool:
    return math.isclose(bound / q, round(bound / q))


class Distribution(Section):
    """One entry of the search space, e.g. ``{param: train.lr, type: qloguniform, ...}``."""

    param: str = Field(description="The searched key, `train.<key>`.")
    type: Literal["qloguniform", "loguniform", "uniform", "quniform", "choice", "randint"] = Field(
        description=(
            "`qloguniform`/`quniform` (need `lower`, `upper`, `q`), `loguniform`/`uniform`/`randint` (`lower`, "
            "`upper`; randint's upper bound is exclusive, as in Ray) or `choice` (`values`)."
        ),
    )
    lower: float | None = Field(None, description="The lower bound (not for `choice`).")
    upper: float | None = Field(None, description="The upper bound (not for `choice`).")
    q: Annotated[float, Field(gt=0)] | None = Field(
        None,
        description=(
            "The grid step of the quantized types; trials train on the grid with every searcher, and both bounds "
            "must lie on it."
        ),
    )
    values: list[Any] | None = Field(None, description="The candidates of `choice` (numbers, strings or booleans).")

    @model_validator(mode="after")
    def _arguments_fit_type(self) -> "Distribution":
        if self.type == "choice":
            if not self.values:
                raise ValueError(f"{self.param}: choice needs a non-empty 'values' list")
            # HyperOpt finds no list among its categories (the sweep would fail at its start).
            listed = [value for value in self.values if not isinstance(value, (bool, int, float, str))]
            if listed:
                raise ValueError(f"{self.param}: choice values must be numbers, strings or booleans, not {listed[0]!r}")
            return self
        if self.lower is None or self.upper is None:
            raise ValueError(f"{self.param}: {self.type} needs 'lower' and 'upper'")
        if self.lower >= self.upper:
            raise ValueError(f"{self.param}: lower ({self.lower:g}) must be below upper ({self.upper:g})")
        if self.type in ("qloguniform", "loguniform") and self.lower <= 0:
            raise ValueError(f"{self.param}: {self.type} needs lower > 0")
        if self.type in ("qloguniform", "quniform") and self.q is None:
            raise ValueError(f"{self.param}: {self.type} needs 'q'")
        if self.type == "randint" and (self.lower != int(self.lower) or self.upper != int(self.upper)):
            raise ValueError(f"{self.param}: randint bounds must be integers")
        if self.type in QUANTIZED:
            # Ray rejects them deep inside the sweep, after the stages before it have run.
            for name, bound in (("lower", self.lower), ("upper", self.upper)):
                if not _on_grid(bound, self.q):  # type: ignore[arg-type]
                    raise ValueError(f"{self.param}: {name} {bound:g} is not a multiple of q={self.q:g} (Ray requires it)")
        return self

    @property
    def train_key(self) -> str:
        """``"train.lr"`` -> ``"lr"`` (TuneConfig admits only ``train.*`` params)."""
        return self.param.partition(".")[2]

    def train_value(self, value: Any) -> Any:
        """A drawn value as a trial trains it: on the ``q`` grid and of the train field's type."""
        if self.type in QUANTIZED:
            value = quantize(float(value), float(self.lower), float(self.upper), float(self.q))  # type: ignore[arg-type]
        annotation = TrainConfig.model_fields[self.train_key].annotation
        if annotation is int and isinstance(value, float):
            return int(round(value))
        if annotation is float and isinstance(value, int) and not isinstance(value, bool):
            return float(value)
        return value

    def extremes(self) -> list[Any]:
        """The values a trial can train that are most likely to be invalid for the train field.

        A continuous draw never lands exactly on a bound (uniform is [lower, upper)), so the
        points just inside are checked, as the trial would train them (rounded on an int field).
        """
        if self.type == "choice":
            points: list[Any] = list(self.values or [])
        elif self.type == "randint":
            points = [int(self.lower), int(self.upper) - 1]  # type: ignore[arg-type]
        elif self.type in QUANTIZED:
            points = [float(self.lower), float(self.upper)]  # type: ignore[arg-type]
        else:
            lower, upper = float(self.lower), float(self.upper)  # type: ignore[arg-type]
            points = [math.nextafter(lower, upper), math.nextafter(upper, lower)]
        return [self.train_value(point) for point in points]

    def outside_reason(self, value: Any) -> str | None:
        """Why ``value`` is not a point of this distribution (None if it is one)."""
        if self.type == "choice":
            return None if value in (self.values or []) else f"is not one of {self.values}"
        lower, upper = float(self.lower), float(self.upper)  # type: ignore[arg-type]
        inside = lower <= value < upper if self.type == "randint" else lower <= value <= upper
        if not inside:
            return f"is outside [{lower:g}, {upper:g}{')' if self.type == 'randint' else ']'}"
        if self.type in QUANTIZED and quantize(value, lower, upper, self.q) != value:  # type: ignore[arg-type]
            return f"is not a multiple of q={self.q:g}"
        return None


class AshaConfig(Section):
    max_t: PositiveInt | None = Field(
        None,
        description="ASHA's horizon in epochs; `null` means `train.epochs`, the length of every trial.",
    )
    grace_period: PositiveInt = Field(2, description="Epochs every trial runs before ASHA may stop it.")
    reduction_factor: Annotated[float, Field(gt=1.0)] = Field(
        3.0,
        description="ASHA's halving rate: about 1 in this many trials goes on at each rung.",
    )

    @model_validator(mode="after")
    def _grace_within_budget(self) -> "AshaConfig":
        if self.max_t is not None and self.grace_period > self.max_t:
            raise ValueError(f"grace_period ({self.grace_period}) must be <= max_t ({self.max_t})")
        return self


class ResourcesConfig(Section):
    cpu: Annotated[float, Field(gt=0)] = Field(
        4.0,
        description=(
            "CPUs reserved per trial and per `evaluate` run (fractions allowed); with `train.threads: null`, "
            "also the torch threads every run trains with."
        ),
    )
    gpu: Annotated[float, Field(ge=0)] = Field(
        1.0,
        description=(
            "GPUs reserved per trial and per `evaluate` run: 1, a fraction (0.5, 0.25) to run several side by "
            "side on one GPU, each capped at its share of the GPU's memory, or 0 to train on the CPU; a local "
            "Ray that cannot hold one trial stops the stage at once."
        ),
    )

    @field_validator("gpu")
    @classmethod
    def _one_device_at_most(cls, value: float) -> float:
        if value > 1:
            raise ValueError(
                f"gpu is {value:g}, but a trial or evaluate run trains on one device: Ray would reserve GPUs it "
                "never uses; use 1, or a fraction (0.5, 0.25) to run several on one GPU"
            )
        return value


SearcherName = Literal["hyperopt", "optuna", "random"]
SchedulerName = Literal["asha", "fifo"]


class TuneConfig(Section):
    searcher: SearcherName = Field(
        "hyperopt",
        description="`hyperopt` (TPE), `optuna` (TPE) or `random` (the baseline).",
    )
    seed: Seed = Field(0, description="Seed of the searcher.")
    num_samples: PositiveInt = Field(
        20,
        description="Trials in the sweep; the first is always the `train:` configuration.",
    )
    max_concurrent: PositiveInt = Field(1, description="Trials running at once.")
    n_initial_points: NonNegativeInt | None = Field(
        None,
        description=(
            "Start-up trials before TPE models the results (HyperOpt's `n_initial_points`, Optuna's "
            "`n_startup_trials`), the initial configuration among them; below `num_samples`. `null`: a third of "
            "`num_samples`, at least 1."
        ),
    )
    scheduler: SchedulerName = Field(
        "asha",
        description="`asha` (stops poor trials early) or `fifo` (every trial runs all its epochs).",
    )
    asha: AshaConfig = Field(AshaConfig(), description="ASHA's settings (`scheduler: asha`).")
    metric: Literal["bbox_mAP", "segm_mAP"] = Field(
        "bbox_mAP",
        description=(
            "What the sweep maximises on the val split: `bbox_mAP` or `segm_mAP`; the final evaluation gives its "
            "verdict on it."
        ),
    )
    mode: Literal["max"] = Field("max", description="`max`: a higher score is better.")
    search_space: list[Distribution] = Field(
        description=(
            "The searched `train.*` keys, one `{param, type, ...}` entry each; the `train:` values must lie in "
            "the space, since every sweep starts from them."
        ),
        default_factory=lambda: [
            Distribution(param="train.lr", type="qloguniform", lower=1e-4, upper=1e-1, q=1e-4),
            Distribution(param="train.batch_size", type="choice", values=[2, 4, 8]),
            Distribution(param="train.weight_decay", type="loguniform", lower=1e-5, upper=1e-3),
        ]
    )
    resources_per_trial: ResourcesConfig = Field(
        ResourcesConfig(),
        description="What one trial reserves on the Ray cluster.",
    )
    ray_address: str = Field(
        "",
        description=(
            "Empty: a private Ray on this machine; `auto`: the cluster this node belongs to; `host:port`: that "
            "cluster's head (the driver runs on a node of it; `ray://` is refused, see [cluster](cluster.md))."
        ),
    )
    allow_unauthenticated_cluster: bool = Field(
        False,
        description=(
            "`false`: a `ray_address` cluster that accepts clients without its token is refused before anything "
            "runs (anyone reaching its ports could run code on every node); `true`: allowed, for a network only "
            "trusted people reach (see [cluster](cluster.md#security))."
        ),
    )
    storage_path: str = Field(
        "ray_results",
        description=(
            "Where Ray keeps trial state and checkpoints: a folder (a relative one from the repository root), an "
            "absolute path every node of a cluster mounts, or `s3://`/`gs://` (endpoint from the AWS settings); "
            "not a DVC output, so an interrupted sweep can resume (a finished sweep deletes its checkpoints)."
        ),
    )
    max_failures: NonNegativeInt = Field(0, description="Retries of a failed trial (from its last checkpoint).")
    checkpoint_every: PositiveInt = Field(
        1,
        description=(
            "Epochs between a trial's checkpoints (weights and optimizer state, written while the epoch is "
            "evaluated); a resumed trial repeats the epochs since its last one."
        ),
    )

    @model_validator(mode="after")
    def _space_targets_train_params(self) -> "TuneConfig":
        seen: set[str] = set()
        for dist in self.search_space:
            section, _, key = dist.param.partition(".")
            if section != "train" or key not in TrainConfig.model_fields:
                raise ValueError(f"search_space param '{dist.param}' is not a train.* parameter")
            if dist.param in seen:
                raise ValueError(f"search_space param '{dist.param}' appears twice")
            seen.add(dist.param)
        if not self.search_space:
            raise ValueError("search_space must not be empty")
        if self.n_initial_points is not None and self.n_initial_points >= self.num_samples:
            raise ValueError(
                f"n_initial_points ({self.n_initial_points}) must be below num_samples ({self.num_samples})"
            )
        return self

    @field_validator("ray_address")
    @classmethod
    def _address_the_driver_can_join(cls, value: str) -> str:
        if value.startswith("ray://"):
            raise ValueError(
                f"'{value}' is a Ray Client address, which pedtune does not use: the sweep's driver must run on a "
                "node of the cluster, where the tracking store and the sweep's state are reachable. Submit the "
                "study to the cluster as a Ray Job instead: `ray job submit --address http://<head>:8265 "
                "--working-dir . -- sh -c \"dvc config --local core.no_scm true && dvc repro\"` with tune.ray_address: auto "
                "(docs/cluster.md)"
            )
        if value and value != "auto" and not re.fullmatch(r"[^\s:/]+:\d+", value):
            raise ValueError(f"'{value}' is not \"\" (a local Ray), \"auto\" or host:port of a cluster's head")
        return value

    @model_validator(mode="after")
    def _cluster_storage_reachable_from_every_node(self) -> "TuneConfig":
        # Ray refuses a trial's first checkpoint on a node that cannot see the storage, an
        # epoch into the sweep; a relative folder is this machine's. (An absolute one is
        # taken for a shared mount and checked on every node when the sweep starts.)
        if self.ray_address and "://" not in self.storage_path and not os.path.isabs(self.storage_path):
            raise ValueError(
                f"storage_path '{self.storage_path}' is a folder of this machine, but ray_address "
                f"'{self.ray_address}' runs trials on other nodes, which cannot save checkpoints there. Use an "
                "object store (s3://bucket/sweeps, gs://...; an S3-compatible endpoint comes from AWS_ENDPOINT_URL) "
                "or the absolute path of a mount every node shares"
            )
        return self


def distinct_seeds(value: list[int], why: str) -> list[int]:
    """Seeds of repeated runs: at least two (``why`` says what for) and no repeats."""
    if len(value) < 2:
        raise ValueError(f"at least 2 seeds are needed {why}")
    if len(set(value)) != len(value):
        raise ValueError("seeds must be distinct")
    return value


class EvaluateConfig(Section):
    seeds: list[Seed] = Field(
        [1, 2, 3],
        description=(
            "One training per seed for each of the initial and the tuned configuration (at least 2, distinct); "
            "never `train.seed` nor a seed the search space can draw, since such a run would repeat a trial the "
            "search selected on."
        ),
    )
    epochs: PositiveInt | None = Field(None, description="Epochs per evaluation run; `null` means `train.epochs`.")
    train_on: Literal["train", "train+val"] = Field(
        "train",
        description="Train the evaluation runs on `train` or on `train+val`.",
    )
    num_pictures: NonNegativeInt = Field(
        4,
        description="Test images drawn with the ground truth and both configurations' predictions.",
    )
    score_threshold: Fraction = Field(0.5, description="The lowest score of a detection drawn in the pictures.")

    @field_validator("seeds")
    @classmethod
    def _seeds_distinct(cls, value: list[int]) -> list[int]:
        return distinct_seeds(value, "to estimate a spread")


class RecordConfig(Section):
    """``pedtune record``: the grid of configurations a recorded benchmark trains, and its seeds."""

    levels: dict[str, PositiveInt] = Field(
        default_factory=lambda: {"train.lr": 4, "train.weight_decay": 1},
        description="Values recorded per searched non-choice parameter: the midpoints of that many equally "
                    "likely bins of its distribution (a choice records all its values).",
    )
    seeds: list[Seed] = Field(
        default_factory=lambda: [0, 1],
        description="Training seeds: every grid configuration is trained once per seed (at least 2, distinct).",
    )
    epochs: PositiveInt | None = Field(
        default=None, description="Epochs each configuration is trained and scored for; null: train.epochs."
    )
    folder: str = Field(
        default="recordings/recorded",
        description="Folder of the recorded table (table.csv) and its provenance (provenance.json).",
    )

    @field_validator("seeds")
    @classmethod
    def _seeds_distinct(cls, value: list[int]) -> list[int]:
        return distinct_seeds(value, "to measure the seed noise")


class CompareConfig(Section):
    """``pedtune compare``: which searcher/scheduler variants to replay on the recorded table, and how often."""

    searchers: list[SearcherName] = Field(
        default_factory=lambda: ["hyperopt", "optuna", "random"],
        description="Searchers to compare (each with each scheduler and budget).",
    )
    schedulers: list[SchedulerName] = Field(
        default_factory=lambda: ["asha", "fifo"], description="Schedulers to compare."
    )
    budgets: list[PositiveInt] | None = Field(
        default=None, description="Trials per sweep (tune.num_samples) to compare; null: the recording's own."
    )
    seeds: PositiveInt = Field(
        default=50, description="Sweeps per variant, with searcher seeds 0, 1, ... (the spread they show is the verdict's yardstick)."
    )
    parallel: PositiveInt | None = Field(
        default=None, description="Sweeps replayed side by side, each driven from a Ray worker process of its own; "
        "null: one per CPU.",
    )
    resamples: PositiveInt = Field(
        default=2000, description="Bootstrap resamples of the table's training seeds (with the searcher seeds) behind "
        "the verdict's table-noise intervals.",
    )
    resample_seed: Seed = Field(default=0, description="Seed of the bootstrap's random draws.")
    output: str = Field(default="results/compare", description="Folder of the verdict (verdict.md), its data and plots.")

    @field_validator("searchers", "schedulers")
    @classmethod
    def _non_empty_distinct(cls, value: list[str]) -> list[str]:
        if not value or len(set(value)) != len(value):
            raise ValueError("must list at least one entry, each once")
        return value


class StudyConfig(Section):
    data: DataConfig = Field(description="Where the dataset comes from, how it is split and loaded.")
    model: ModelConfig = Field(description="The Mask R-CNN variant and its input size.")
    train: TrainConfig = Field(
        description="One training configuration; the search overrides the keys of `tune.search_space`.",
    )
    mlflow: MlflowConfig = Field(
        description="Where runs are tracked (not DVC params: where runs are logged changes no result).",
    )
    tune: TuneConfig = Field(TuneConfig(), description="The Ray Tune sweep.")
    evaluate: EvaluateConfig = Field(
        EvaluateConfig(),
        description="The final comparison of the initial and the tuned configuration on the test split.",
    )
    record: RecordConfig = Field(
        RecordConfig(), description="`pedtune record`: the benchmark table of learning curves on a grid of the search space.",
    )
    compare: CompareConfig = Field(
        CompareConfig(), description="`pedtune compare`: searcher/scheduler variants replayed on the recorded table.",
    )

    @model_validator(mode="after")
    def _asha_budget_fits_epochs(self) -> "StudyConfig":
        # A trial never runs longer than train.epochs, so that bounds ASHA's horizon.
        asha = self.tune.asha
        if self.tune.scheduler != "asha":
            return self
        if asha.max_t is not None and asha.max_t > self.train.epochs:
            raise ValueError(f"tune.asha.max_t ({asha.max_t}) must be <= train.epochs ({self.train.epochs})")
        if asha.grace_period > self.train.epochs:
            raise ValueError(
                f"tune.asha.grace_period ({asha.grace_period}) must be <= train.epochs ({self.train.epochs})"
            )
        return self

    @model_validator(mode="after")
    def _train_section_in_search_space(self) -> "StudyConfig":
        # Every sweep starts from the train: section. HyperOpt rejects an initial choice outside
        # `values` deep inside the sweep, and an off-grid value would be trained as another
        # number than the train stage used: fail when the file is read, before any stage runs.
        # Likewise a value the train field rejects (batch size 0, lr above its bound) would fail
        # every trial that draws it, after the stages before the sweep have run.
        problems = []
        train = self.train.model_dump()
        for dist in self.tune.search_space:
            value = getattr(self.train, dist.train_key)
            reason = dist.outside_reason(value)
            if reason:
                problems.append(f"the initial value {dist.param}={value!r} (train section) {reason}")
            for extreme in dist.extremes():
                try:
                    TrainConfig.model_validate({**train, dist.train_key: extreme})
                except ValidationError as error:
                    detail = error.errors()[0]["msg"].removeprefix("Value error, ")
                    shown = f"{extreme:g}" if isinstance(extreme, float) else repr(extreme)  # 100, not 99.99999999999999
                    problems.append(f"{dist.param}={shown} can be drawn but is not a valid value: {detail}")
                    break
        if problems:
            raise ValueError("tune.search_space does not fit: " + "; ".join(problems))
        return self

    @model_validator(mode="after")
    def _evaluation_seeds_not_the_search_seed(self) -> "StudyConfig":
        # Every tuning trial trains with train.seed. An evaluation run at that seed repeats a trial
        # bit for bit: the tuned config's run is the very run the search picked for its val score,
        # and a model's val and test scores share its seed's luck, so that pair would lean towards
        # "tuned is better" (and the initial config's run, when it lost, the other way).
        seeds = self.evaluate.seeds
        for dist in self.tune.search_space:
            if dist.param == "train.seed":  # the trials train at several seeds: none may be evaluated
                drawn = [seed for seed in seeds if dist.outside_reason(seed) is None]
                if drawn:
                    raise ValueError(
                        f"evaluate.seeds {seeds} holds {drawn}, which tune.search_space can draw for train.seed: "
                        f"an evaluation run at such a seed could repeat a trial; use seeds outside the searched ones"
                    )
        if self.train.seed in seeds:
            unused = [seed for seed in range(len(seeds) + 1) if seed != self.train.seed][: len(seeds)]
            raise ValueError(
                f"evaluate.seeds {seeds} contains train.seed ({self.train.seed}), the seed every tuning trial "
                f"trains with: the tuned config's run at that seed would be the very trial the search selected, "
                f"its luck included; use other seeds, e.g. evaluate.seeds: {unused}"
            )
        return self

    @model_validator(mode="after")
    def _cluster_gets_decoded_data(self) -> "StudyConfig":
        # Decoded samples travel to other nodes through Ray's object store; an uncached
        # store would read image files that exist on the driver's machine only.
        if self.tune.ray_address and not self.data.cache:
            raise ValueError(
                f"data.cache: false reads the images from data/dataset while training, which the nodes of the Ray cluster at '{self.tune.ray_address}' do not have; set "
                "data.cache: true (the decoded samples reach every node through Ray's object store)"
            )
        return self

    @model_validator(mode="after")
    def _cuda_runs_reserve_a_gpu(self) -> "StudyConfig":
        # A run granted no GPU trains on the CPU (Ray 2.60 no longer hides the GPUs from it, so
        # 'cuda' would use one nobody reserved, beside the trials that did).
        if self.train.device == "cuda" and self.tune.resources_per_trial.gpu == 0:
            raise ValueError(
                "train.device is 'cuda' but tune.resources_per_trial.gpu is 0: trials and evaluate runs would "
                "use a GPU that Ray did not reserve for them; give each a GPU share (e.g. gpu: 0.5) or use "
                "train.device: auto (they then train on the CPU)"
            )
        return self

    @property
    def asha_max_t(self) -> int:
        return self.tune.asha.max_t or self.train.epochs

    @property
    def torch_threads(self) -> int:
        """The CPU threads every run of this study trains with (``train.threads``)."""
        return self.train.threads or max(1, math.floor(self.tune.resources_per_trial.cpu))
