"""``pedtune predict``'s throughput against a bare torchvision inference loop on the same images and model.

The project: ``predict.run.predict_images``, what ``pedtune predict`` runs once it has the model
(images decoded in its DataLoader, the model, masks thresholded, COCO results with RLE masks,
an overlay JPEG per image, the output folder written whole). The reference: each batch decoded
with ``torchvision.io.decode_image`` and passed to the same model object under
``torch.inference_mode()``, nothing kept. Same image files (the test split's first ``--images``),
same batch size, same threads; one untimed pass of each, then ``--reps`` repetitions in a
rotated order. The ratio is the project's images/s over the bare loop's, per repetition: of wall
time, and of the process's CPU time (every thread's; with ``data.num_workers: 0`` and no other
thread the work each variant does, which holds where other processes share the cores and wall
times scatter).

The model is the project's model file (``models/tuned.pt``'s format, read by ``load_predictor``)
holding pretrained-like weights (``common.pseudo_pretrained``): the compute of a real model, not
its detections; ``--score-thresh 0`` gives every image ``model.detections_per_img`` detections
(the most RLE and mask pasting an image can cost).

    python -m bench.predict --data PATH
    python -m bench.predict --data PATH --score-thresh 0
"""

from __future__ import annotations

import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch
from torchvision.io import ImageReadMode, decode_image

from bench import common
from pedtune.data.dataset import image_path
from pedtune.model.checkpoint import save_model
from pedtune.model.factory import build_model
from pedtune.predict.run import predict_images
from pedtune.predict.source import Predictor, load_predictor


def bare_loop(model: torch.nn.Module, images: list[Path], batch_size: int) -> int:
    """Decode and predict every image; returns the detections (so the outputs are used)."""
    detections = 0
    with torch.inference_mode():
        for start in range(0, len(images), batch_size):
            batch = [decode_image(str(path), mode=ImageReadMode.RGB).float() / 255
                     for path in images[start:start + batch_size]]
            detections += sum(len(out["scores"]) for out in model(batch))
    return detections


def measure(predictor: Predictor, images: list[Path], batch_size: int, num_workers: int, threshold: float,
            scratch: Path, reps: int) -> dict[str, Any]:
    names = ["bare", "project"]
    seconds: dict[str, list[float]] = {name: [] for name in names}
    cpu_seconds: dict[str, list[float]] = {name: [] for name in names}
    detections: dict[str, int] = {}
    device = torch.device("cpu")

    def run(name: str, tag: str) -> tuple[float, float]:
        start, cpu_start = common.timer(), time.process_time()
        if name == "bare":
            detections[name] = bare_loop(predictor.model, images, batch_size)
        else:
            output = scratch / f"predictions-{tag}"
            outcome = predict_images(predictor, images, output, device, batch_size, num_workers, threshold)
            detections[name] = outcome.detections
        elapsed, cpu = common.timer() - start, time.process_time() - cpu_start
        shutil.rmtree(scratch / f"predictions-{tag}", ignore_errors=True)
        return elapsed, cpu

    for name in names:  # warm-up: allocator, lazy inits, the page cache of the image files
        run(name, "warm-up")
    for rep in range(reps):
        for name in names[rep % 2:] + names[:rep % 2]:
            wall, cpu = run(name, str(rep))
            seconds[name].append(wall)
            cpu_seconds[name].append(cpu)
            common.log(f"rep {rep + 1}/{reps} {name}: {wall:.2f} s, CPU {cpu:.2f} s")
    return {
        "seconds": {name: common.stats(values) for name, values in seconds.items()},
        "images_per_s": {name: common.stats([len(images) / s for s in values]) for name, values in seconds.items()},
        "cpu_seconds": {name: common.stats(values) for name, values in cpu_seconds.items()},
        "ratio_project_vs_bare": common.stats([b / p for b, p in zip(seconds["bare"], seconds["project"])]),
        "ratio_project_vs_bare_cpu": common.stats([b / p for b, p in zip(cpu_seconds["bare"], cpu_seconds["project"])]),
        "detections": detections,
    }


def main(argv: list[str] | None = None) -> dict:
    p = common.parser(__doc__.split("\n")[0])
    p.add_argument("--arch", choices=tuple(common.ARCHS), default="light")
    # Short passes, many pairs: each pair then sees nearly the same load from other processes.
    p.add_argument("--images", type=int, default=4, help="test-split images per pass (the first N; 0: all)")
    p.add_argument("--reps", type=int, default=15, help="interleaved repetitions of each variant")
    p.add_argument("--batch-size", type=int, default=None, help="default: train.eval_batch_size")
    p.add_argument("--score-thresh", type=float, default=None,
                   help="the model's box score threshold (default: the model's own; 0: every image gets "
                        "detections_per_img detections)")
    args = p.parse_args(argv)
    if args.images < 0:
        p.error(f"--images {args.images}: must be 0 (all) or a positive count")
    if args.device != "cpu":
        p.error("--device cuda: not prepared yet; this benchmark times the CPU")
    common.setup(args)
    with common.dataset(args) as root, tempfile.TemporaryDirectory(prefix="pedtune-bench-predict-") as folder:
        scratch = Path(folder)
        config = common.study_config(args, {"model": {"arch": common.ARCHS[args.arch]}})
        train_samples, _ = common.sample_sets(root, config)
        stems = common.split_of(root, config).test
        images = [image_path(root, stem) for stem in (stems[: args.images] if args.images else stems)]
        pretrained = common.pseudo_pretrained(config, common.batches(train_samples, 2, 2))
        model_file = scratch / "models" / "tuned.pt"
        save_model(build_model(config.model, pretrained).state_dict(), config.model, config.train, {1: "person"},
                   {1: 1}, model_file)
        load_start = common.timer()
        predictor = load_predictor(str(model_file))
        load_s = common.timer() - load_start
        if args.score_thresh is not None:
            predictor.model.roi_heads.score_thresh = args.score_thresh
        batch_size = args.batch_size or config.train.eval_batch_size
        measured = measure(predictor, images, batch_size, config.data.num_workers, config.evaluate.score_threshold,
                           scratch, args.reps)
    run = {"arch": config.model.arch, "images": len(images), "batch_size": batch_size,
           "num_workers": config.data.num_workers, "min_size": config.model.min_size, "max_size": config.model.max_size,
           "box_score_thresh": predictor.model.roi_heads.score_thresh, "reps": args.reps,
           "model_load_s": round(load_s, 3), **measured}
    common.log(f"{args.arch}: project / bare {measured['ratio_project_vs_bare']['median']:.3f} (CPU time "
               f"{measured['ratio_project_vs_bare_cpu']['median']:.3f}) "
               f"(bare {measured['images_per_s']['bare']['median']:.2f} img/s, project "
               f"{measured['images_per_s']['project']['median']:.2f} img/s; detections {measured['detections']})")
    return common.emit("predict", args, {"runs": [run]})


if __name__ == "__main__":
    main()
