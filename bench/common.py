"""Shared pieces of the benchmarks: arguments, config, data, weights, timing, machine info, results.

Every benchmark builds its StudyConfig from ``profiles/cpu-quick.yaml`` (the profile a CPU
user runs; ``--params params.yaml`` starts from the GPU defaults instead) with a few overrides,
so what it measures is the project's own code path.
"""

from __future__ import annotations

import argparse
import copy
import inspect
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
import yaml

from pedtune.config import ConfigError, StudyConfig, validate
from pedtune.config.schema import SyntheticConfig
from pedtune.data.dataset import DetectionDataset, SampleSet, collate, list_stems, open_samples
from pedtune.data.split import Split, make_split
from pedtune.data.synthetic import write_synthetic_dataset
from pedtune.device import resolve_device
from pedtune.model.factory import build_model

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "results"
QUICK_PROFILE = REPO / "profiles" / "cpu-quick.yaml"
DATA_ENV = "PEDTUNE_BENCH_DATA"  # an extracted PennFudanPed, when --data is not given
ARCHS = {
    "light": "maskrcnn_mobilenet_v3_large_fpn",
    "r50": "maskrcnn_resnet50_fpn",
    "r50v2": "maskrcnn_resnet50_fpn_v2",
}
Batch = tuple[tuple[torch.Tensor, ...], tuple[dict[str, torch.Tensor], ...]]


def parser(description: str) -> argparse.ArgumentParser:
    """The arguments every benchmark shares: data, sizes, device, output."""
    p = argparse.ArgumentParser(description=description, formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--params", type=Path, default=QUICK_PROFILE,
                   help="the params file the benchmark's config starts from (params.yaml: the GPU defaults)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="a params key to change after the benchmark's own settings, e.g. data.num_workers=0 (repeatable)")
    p.add_argument("--data", type=Path, default=os.environ.get(DATA_ENV) or None,
                   help=f"an extracted PennFudanPed folder (default: ${DATA_ENV}); or --synthetic")
    p.add_argument("--synthetic", action="store_true", help="generate a synthetic dataset instead of --data")
    p.add_argument("--num-images", type=int, default=60, help="synthetic images")
    p.add_argument("--image-size", default="240x320", help="synthetic image HxW")
    p.add_argument("--min-size", type=int, default=None, help="model.min_size (default: the quick profile's)")
    p.add_argument("--max-size", type=int, default=None, help="model.max_size (default: the quick profile's)")
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    p.add_argument("--amp", choices=("off", "on", "both"), default="both", help="CUDA only; ignored on CPU")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    p.add_argument("--json", type=Path, default=None, help="also write the result here")
    return p


_START_LOAD: list[float] = []


def setup(args: argparse.Namespace) -> None:
    _START_LOAD.append(os.getloadavg()[0])
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        resolve_device(args.device)
    except ConfigError as error:
        raise SystemExit(f"--device {args.device}: {error}") from None


def amp_modes(args: argparse.Namespace) -> list[bool]:
    """AMP settings to measure: only 'off' is meaningful on CPU (the project ignores amp there)."""
    if args.device != "cuda":
        return [False]
    return {"off": [False], "on": [True], "both": [False, True]}[args.amp]


def merge(base: dict, changes: dict) -> dict:
    """A new tree: ``base`` with ``changes`` applied key by key (neither argument is modified)."""
    out = copy.deepcopy(base)
    for key, value in changes.items():
        out[key] = merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else copy.deepcopy(value)
    return out


def study_config(args: argparse.Namespace | None = None, changes: dict | None = None) -> StudyConfig:
    """``--params`` (default: the quick profile) with the benchmark's sizes, device and ``changes`` applied, validated."""
    raw = yaml.safe_load(Path(getattr(args, "params", QUICK_PROFILE)).read_text())
    if args is not None:
        model = {k: v for k, v in (("min_size", args.min_size), ("max_size", args.max_size)) if v is not None}
        if model.get("min_size") and "max_size" not in model:
            model["max_size"] = max(model["min_size"], raw["model"]["max_size"] * model["min_size"] // raw["model"]["min_size"])
        raw = merge(raw, {"model": model, "train": {"device": args.device}})
    return validate(merge(merge(raw, changes or {}), overrides(getattr(args, "overrides", []))), source="benchmark config")


def overrides(assignments: Sequence[str]) -> dict:
    """``["data.num_workers=0"]`` as ``{"data": {"num_workers": 0}}`` (values parsed as YAML)."""
    tree: dict = {}
    for assignment in assignments:
        key, sep, value = assignment.partition("=")
        if not sep or not key:
            raise SystemExit(f"--set {assignment!r}: expected KEY=VALUE, e.g. data.num_workers=0")
        *parents, leaf = key.split(".")
        node = tree
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = yaml.safe_load(value)
    return tree


def size_of(text: str) -> tuple[int, int]:
    height, width = (int(v) for v in text.lower().split("x"))
    return height, width


@contextmanager
def dataset(args: argparse.Namespace) -> Iterator[Path]:
    """The PennFudanPed folder to read: ``--data``, or a synthetic one in a temporary folder."""
    if not args.synthetic:
        if args.data is None:
            raise SystemExit(f"no dataset: pass --data PATH (an extracted PennFudanPed), set {DATA_ENV}, or --synthetic")
        if not (args.data / "PNGImages").is_dir():
            raise SystemExit(f"{args.data} is not a PennFudanPed folder; pass --data PATH or --synthetic")
        yield args.data
        return
    height, width = size_of(args.image_size)
    folder = Path(tempfile.mkdtemp(prefix="pedtune-bench-"))
    try:
        root = folder / "PennFudanPed"
        cfg = SyntheticConfig(num_images=args.num_images, height=height, width=width, max_instances=3, seed=0)
        write_synthetic_dataset(cfg, root)
        yield root
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def split_of(root: Path, config: StudyConfig) -> Split:
    return make_split(list_stems(root), config.data.split)


def sample_sets(root: Path, config: StudyConfig, cache: bool = True) -> tuple[SampleSet, SampleSet]:
    """Train and val stores of the project's split, as ``fit`` receives them."""
    split = split_of(root, config)
    size = (config.model.min_size, config.model.max_size)
    return open_samples(root, split.train, *size, cache, ""), open_samples(root, split.val, *size, cache, "")


def batches(samples: SampleSet, batch_size: int, count: int | None = None, hflip_prob: float = 0.0) -> list[Batch]:
    """Collated batches held in memory (the first ``count``), exactly as the project's DataLoader yields them."""
    dataset = DetectionDataset(samples, hflip_prob=hflip_prob)
    items = [dataset[i] for i in range(len(dataset))]
    out = [collate(items[i : i + batch_size]) for i in range(0, len(items) - batch_size + 1, batch_size)]
    return out[:count] if count else out


def pseudo_pretrained(config: StudyConfig, calibration: Sequence[Batch]) -> dict[str, torch.Tensor]:
    """Random weights with calibrated batch-norm statistics, standing in for the COCO weights offline.

    With any ``pretrained`` state the project builds the model as it fine-tunes one (frozen
    batch norm, only ``trainable_backbone_layers`` trained), which is the compute and memory
    profile of a real run; calibrating the statistics keeps the activations in range.
    """
    torch.manual_seed(0)
    model = build_model(config.model)
    for module in model.modules():
        if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
            module.momentum = None  # cumulative average over the calibration batches
    model.train()
    with torch.no_grad():
        for images, targets in calibration:
            model(list(images), [dict(t) for t in targets])
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def sync(device: torch.device | str) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


class Sampler:
    """Readings of ``read()`` every ``interval_s`` while the block runs, taken in a thread (None: skipped)."""

    def __init__(self, read: Callable[[], float | None], interval_s: float, enabled: bool = True) -> None:
        self._read, self.interval_s, self.enabled = read, interval_s, enabled
        self.samples: list[float] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _loop(self) -> None:
        while not self._stop.wait(self.interval_s):
            value = self._read()
            if value is not None:
                self.samples.append(value)

    def __enter__(self) -> "Sampler":
        if self.enabled:
            self._thread = threading.Thread(target=self._loop, daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._thread is not None:
            self._stop.set()
            self._thread.join()

    @property
    def mean(self) -> float | None:
        return round(statistics.fmean(self.samples), 1) if self.samples else None


def gpu_utilisation() -> float | None:
    try:
        return float(torch.cuda.utilization())
    except Exception:  # no pynvml: ask nvidia-smi
        try:
            out = subprocess.run(["nvidia-smi", "--query-gpu=utilization.gpu", "--format=csv,noheader,nounits"],
                                 capture_output=True, text=True, timeout=5).stdout
            return float(out.split()[0])
        except Exception:
            return None


class GpuSampler(Sampler):
    """Mean GPU utilisation (%) over a block, sampled every 0.2 s; None on CPU or without NVML/nvidia-smi."""

    def __init__(self, device: torch.device | str) -> None:
        super().__init__(gpu_utilisation, 0.2, enabled=torch.device(device).type == "cuda")


def stats(values: Sequence[float]) -> dict[str, float]:
    """Median and range: the median of paired ratios is what survives a noisy machine."""
    ordered = sorted(values)
    return {
        "median": round(statistics.median(ordered), 4),
        "min": round(ordered[0], 4),
        "max": round(ordered[-1], 4),
        "n": len(ordered),
    }


def machine(device: str = "cpu") -> dict[str, Any]:
    # Imported here, where a result is written: pedtune.tracking loads MLflow (~3 s of CPU), which the
    # worker processes a benchmark spawns (they import this module again) never need.
    from pedtune.tracking.record import cpu_model  # noqa: PLC0415

    info: dict[str, Any] = {
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "device": device,
        "loadavg_at_start": _START_LOAD[0] if _START_LOAD else os.getloadavg()[0],
    }
    if device == "cuda" and torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def portable(value: Any) -> Any:
    """``value`` with every absolute path in it made machine-free: a path inside the repository
    relative to it, any other (a dataset, a temporary folder) by its last part only."""
    if isinstance(value, dict):
        return {key: portable(item) for key, item in value.items()}
    if isinstance(value, list):
        return [portable(item) for item in value]
    if not isinstance(value, str) or not value.startswith("/"):
        return value
    path = Path(value)
    return path.relative_to(REPO).as_posix() if path.is_relative_to(REPO) else path.name


def emit(name: str, args: argparse.Namespace, result: dict[str, Any], echo: bool = True) -> dict[str, Any]:
    """Print the result (unless not ``echo``) and write it to ``--json`` (run_all passes bench/results/<name>.json).

    ``measured_at`` (UTC seconds) is what the table's "latest result" goes by; paths are written
    by :func:`portable`, so a result file names no folder of the machine it ran on."""
    payload = portable({"benchmark": name, "machine": machine(args.device),
                        "data": "synthetic" if args.synthetic else str(args.data),
                        "args": {k: str(v) for k, v in vars(args).items()}, **result,
                        "loadavg_at_end": os.getloadavg()[0], "measured_at": round(time.time())})
    text = json.dumps(payload, indent=2)
    if echo:
        print(text)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(text + "\n")
    return payload


def timer() -> float:
    return time.perf_counter()


def log(message: str) -> None:
    print(f"[bench] {message}", file=sys.stderr, flush=True)


def driver_sweep(config: StudyConfig, experiment_dir: Path, stores: tuple[SampleSet, SampleSet],
                 pretrained: dict[str, torch.Tensor], fit_fn: Any, callback: Any) -> Any:
    """One sweep through the project's driver (``_run_sweep``), whatever shape its trial inputs take."""
    from pedtune.stages import tune as driver

    inputs_type = getattr(driver, "TrialInputs", None)
    inputs: Any = (stores, pretrained, fit_fn)
    if inputs_type is not None:
        inputs = inputs_type(train_samples=stores[0], val_samples=stores[1], pretrained=pretrained, fit_fn=fit_fn)
    if "storage" not in inspect.signature(driver._run_sweep).parameters:  # before storage could be remote
        return driver._run_sweep(config, experiment_dir, inputs, callback)
    from pedtune.tune.storage import open_storage

    started = time.perf_counter()
    storage, experiment = open_storage(str(experiment_dir.parent)), experiment_dir.name
    if "trainable" not in inspect.signature(driver._run_sweep).parameters:  # before the stage opened Ray itself
        return driver._run_sweep(config, storage, experiment, inputs, callback, lambda: time.perf_counter() - started)
    from pedtune.ray_cluster import ray_session

    with ray_session(config.tune.ray_address, log_to_driver=False):
        trainable = driver._trainable(config, inputs, storage, experiment)
        return driver._run_sweep(config, storage, experiment, trainable, callback,
                                 lambda: time.perf_counter() - started)
