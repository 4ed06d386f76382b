"""The typed shape of ``params.yaml``.

Every section forbids unknown keys so that a typo (``learning_rate`` for ``lr``) fails
before any work starts instead of being silently ignored. A default here is the value the
shipped ``params.yaml`` gives (tests/unit/test_config.py checks), so a key left out of the
file means what README's tables say.
"""

from __future__ import annotations

import math
from decimal import Decimal
from typing import Annotated, Any, Literal

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

    num_images: Annotated[int, Field(ge=3)] = 24
    height: Annotated[int, Field(ge=32)] = 96
    width: Annotated[int, Field(ge=32)] = 128
    max_instances: Annotated[int, Field(ge=1, le=254)] = 3
    seed: Seed = 0


class SplitConfig(Section):
    train: Fraction = 0.7
    val: Fraction = 0.15
    test: Fraction = 0.15
    seed: Seed = 42

    @model_validator(mode="after")
    def _fractions_sum_to_one(self) -> "SplitConfig":
        total = self.train + self.val + self.test
        if not math.isclose(total, 1.0, abs_tol=1e-6):
            raise ValueError(f"train + val + test must sum to 1, got {total:g}")
        if self.train <= 0 or self.val <= 0 or self.test <= 0:
            raise ValueError("train, val and test fractions must each be > 0")
        return self


class DataConfig(Section):
    source: Literal["url", "zip", "dir", "synthetic"] = "url"
    url: str = PENN_FUDAN_URL
    md5: Annotated[str, Field(pattern=r"^[0-9a-f]{32}$")] = PENN_FUDAN_MD5
    size_bytes: PositiveInt | None = PENN_FUDAN_SIZE
    local_path: str = ""
    # How many images a url/zip/dir copy must hold (a short copy fails the fetch); None: any.
    expected_images: PositiveInt | None = PENN_FUDAN_IMAGES
    synthetic: SyntheticConfig = SyntheticConfig()
    split: SplitConfig = SplitConfig()
    cache: bool = True
    num_workers: NonNegativeInt = 2

    @model_validator(mode="after")
    def _local_path_for_local_sources(self) -> "DataConfig":
        if self.source in ("zip", "dir") and not self.local_path:
            raise ValueError(f"source '{self.source}' needs data.local_path")
        return self


class ModelConfig(Section):
    arch: Arch = "maskrcnn_resnet50_fpn"
    weights: WeightsChoice = "coco"
    min_size: Annotated[int, Field(ge=32)] = 800
    max_size: Annotated[int, Field(ge=32)] = 1333
    trainable_backbone_layers: NonNegativeInt = 3  # at most BACKBONE_STAGES[arch]
    detections_per_img: PositiveInt = 100
    rpn_test_proposals: PositiveInt = 1000  # RPN proposals per image at inference (torchvision: 1000)

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

    epochs: PositiveInt = 10
    batch_size: PositiveInt = 2
    optimizer: Literal["sgd", "adamw"] = "sgd"
    lr: Annotated[float, Field(gt=0.0, le=10.0)] = 0.005
    momentum: Annotated[float, Field(ge=0.0, lt=1.0)] = 0.9
    weight_decay: Annotated[float, Field(ge=0.0)] = 0.0005
    lr_schedule: Literal["cosine", "step", "multistep", "constant"] = "cosine"
    lr_step_size: PositiveInt = 3
    lr_milestones: list[PositiveInt] = [6, 8]
    lr_gamma: Annotated[float, Field(gt=0.0, le=1.0)] = 0.1
    warmup_epochs: Annotated[float, Field(ge=0.0)] = 1.0  # linear warm-up length; capped at the run's length
    warmup_factor: Annotated[float, Field(gt=0.0, le=1.0)] = 0.001
    grad_clip_norm: Annotated[float, Field(ge=0.0)] = 10.0
    hflip_prob: Fraction = 0.5
    amp: bool = True
    seed: Seed = 0
    device: Literal["auto", "cpu", "cuda"] = "auto"
    eval_batch_size: PositiveInt = 2
    coco_backend: CocoBackend = "pycocotools"  # which library scores COCO AP (same numbers)

    @field_validator("lr_milestones")
    @classmethod
    def _milestones_increasing(cls, value: list[int]) -> list[int]:
        if value != sorted(set(value)):
            raise ValueError("lr_milestones must be strictly increasing")
        return value


class MlflowConfig(Section):
    tracking_uri: str = "sqlite:///mlruns/mlflow.db"
    artifact_location: str = "mlruns/artifacts"
    experiment: Annotated[str, Field(min_length=1)] = "pedtune"
    connect_timeout_s: Annotated[float, Field(gt=0)] = 10.0


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

    param: str
    type: Literal["qloguniform", "loguniform", "uniform", "quniform", "choice", "randint"]
    lower: float | None = None
    upper: float | None = None
    q: Annotated[float, Field(gt=0)] | None = None
    values: list[Any] | None = None

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
    max_t: PositiveInt | None = None  # None: train.epochs, the length of every trial
    grace_period: PositiveInt = 2
    reduction_factor: Annotated[float, Field(gt=1.0)] = 3.0

    @model_validator(mode="after")
    def _grace_within_budget(self) -> "AshaConfig":
        if self.max_t is not None and self.grace_period > self.max_t:
            raise ValueError(f"grace_period ({self.grace_period}) must be <= max_t ({self.max_t})")
        return self


class ResourcesConfig(Section):
    cpu: Annotated[float, Field(gt=0)] = 4.0
    gpu: Annotated[float, Field(ge=0)] = 1.0


class TuneConfig(Section):
    searcher: Literal["hyperopt", "optuna", "random"] = "hyperopt"
    seed: Seed = 0
    num_samples: PositiveInt = 20
    max_concurrent: PositiveInt = 1
    n_initial_points: NonNegativeInt | None = None
    scheduler: Literal["asha", "fifo"] = "asha"
    asha: AshaConfig = AshaConfig()
    metric: Literal["bbox_mAP", "segm_mAP"] = "bbox_mAP"
    mode: Literal["max"] = "max"
    search_space: list[Distribution] = Field(
        default_factory=lambda: [
            Distribution(param="train.lr", type="qloguniform", lower=1e-4, upper=1e-1, q=1e-4),
            Distribution(param="train.batch_size", type="choice", values=[2, 4, 8]),
            Distribution(param="train.weight_decay", type="loguniform", lower=1e-5, upper=1e-3),
        ]
    )
    resources_per_trial: ResourcesConfig = ResourcesConfig()
    ray_address: str = ""
    storage_path: str = "ray_results"
    max_failures: NonNegativeInt = 0
    # Epochs between a trial's checkpoints (weights + optimizer state: 335 MB for ResNet-50); an
    # interrupted trial resumes from its last one and repeats the epochs since.
    checkpoint_every: PositiveInt = 1

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


class EvaluateConfig(Section):
    seeds: list[Seed] = [1, 2, 3]  # not train.seed (0): see StudyConfig._evaluation_seeds_not_the_search_seed
    epochs: PositiveInt | None = None
    train_on: Literal["train", "train+val"] = "train"
    num_pictures: NonNegativeInt = 4
    score_threshold: Fraction = 0.5

    @field_validator("seeds")
    @classmethod
    def _seeds_distinct(cls, value: list[int]) -> list[int]:
        if len(value) < 2:
            raise ValueError("at least 2 seeds are needed to estimate a spread")
        if len(set(value)) != len(value):
            raise ValueError("seeds must be distinct")
        return value


class StudyConfig(Section):
    data: DataConfig
    model: ModelConfig
    train: TrainConfig
    mlflow: MlflowConfig
    tune: TuneConfig = TuneConfig()
    evaluate: EvaluateConfig = EvaluateConfig()

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

    @property
    def asha_max_t(self) -> int:
        return self.tune.asha.max_t or self.train.epochs
