"""Mask inference: torchvision's per-mask paste versus the project's host-box paste, and (on a GPU)
masks copied to the CPU column-major versus row-major before RLE.

The val evaluation of a GPU epoch spends most of its time on masks, inference and RLE encoding
(docs/performance.md). Two changes target it; this benchmark measures both, on the same model
and images, interleaved:

- ``paste``: the model's transform as torchvision builds it (``GeneralizedRCNNTransform``: each
  detection's box coordinates read into Python one scalar at a time, a host-device sync each on
  a GPU) against the project's ``HostBoxPasteTransform`` (the boxes copied to the host once per
  image). Their masks must be identical; the result says whether they were.
- ``layout`` (CUDA only; on the CPU ``iter_predictions`` leaves masks as they are): masks
  transposed on the device before the copy (``column_major``, what ``iter_predictions`` does)
  against the plain row-major copy, timed through inference (``predict``) and conversion to
  COCO results (``to_coco_results``: RLE), the two halves of the evaluation they move work between.

The model has the project's pretrained-like compute (``common.pseudo_pretrained``) and a score
threshold of 0 by default, so every image gets ``model.detections_per_img`` detections to paste:
the dense case, the cost ceiling of an evaluation (a trained model's count varies with its
training).

    python -m bench.mask_paste
    python -m bench.mask_paste --params params.yaml --arch r50 --device cuda
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch
from torchvision.models.detection.transform import GeneralizedRCNNTransform

from bench import common
from pedtune.engine import train as engine
from pedtune.engine.coco_eval import to_coco_results
from pedtune.model.factory import build_model


def torchvision_transform(transform: GeneralizedRCNNTransform) -> GeneralizedRCNNTransform:
    """The same resizing and normalisation as ``transform``, with torchvision's own postprocess (paste)."""
    return GeneralizedRCNNTransform(transform.min_size, transform.max_size, transform.image_mean,
                                    transform.image_std, transform.size_divisible, transform.fixed_size,
                                    _skip_resize=transform._skip_resize)


@contextlib.contextmanager
def row_major_copies() -> Iterator[None]:
    """``iter_predictions`` without its column-major transpose: masks cross to the CPU as computed."""
    saved = engine.column_major
    engine.column_major = lambda masks: masks
    try:
        yield
    finally:
        engine.column_major = saved


def timed_evaluation(model: torch.nn.Module, loader: Any, device: torch.device) -> tuple[list, float, float]:
    """(predictions, predict seconds, to_coco_results seconds) of one pass over ``loader``."""
    common.sync(device)
    start = common.timer()
    predictions = engine.predict(model, loader, device)
    predict_s = common.timer() - start
    start = common.timer()
    for image_id, prediction in predictions:
        to_coco_results(image_id, prediction)
    return predictions, predict_s, common.timer() - start


def same_predictions(a: list, b: list) -> bool:
    return len(a) == len(b) and all(
        ia == ib and pa.keys() == pb.keys() and all(torch.equal(pa[k], pb[k]) for k in pa)
        for (ia, pa), (ib, pb) in zip(a, b))


def measure(model: torch.nn.Module, loader: Any, device: torch.device, reps: int) -> dict[str, Any]:
    """Seconds per pass of each variant, in a rotated order per repetition, after one untimed pass each."""
    project_transform = model.transform
    stock_transform = torchvision_transform(project_transform)
    names = ["torchvision_paste", "host_box_paste"] + (["row_major_copy"] if device.type == "cuda" else [])
    times: dict[str, dict[str, list[float]]] = {n: {"predict_s": [], "to_coco_results_s": []} for n in names}

    def run(name: str) -> tuple[list, float, float]:
        model.transform = stock_transform if name == "torchvision_paste" else project_transform
        layout = row_major_copies() if name == "row_major_copy" else contextlib.nullcontext()
        try:
            with layout:
                return timed_evaluation(model, loader, device)
        finally:
            model.transform = project_transform

    outputs = {name: run(name)[0] for name in names}  # warm-up: allocator, autotuning, lazy inits
    for rep in range(reps):
        for name in names[rep % len(names):] + names[: rep % len(names)]:
            _, predict_s, convert_s = run(name)
            times[name]["predict_s"].append(predict_s)
            times[name]["to_coco_results_s"].append(convert_s)
    totals = {n: [p + c for p, c in zip(t["predict_s"], t["to_coco_results_s"])] for n, t in times.items()}
    result: dict[str, Any] = {
        "detections": sum(len(p["scores"]) for _, p in outputs["host_box_paste"]),
        "seconds": {n: {k: common.stats(v) for k, v in t.items()} for n, t in times.items()},
        "masks_identical_torchvision_vs_host_box": same_predictions(outputs["torchvision_paste"], outputs["host_box_paste"]),
        "ratio_host_box_vs_torchvision": common.stats(
            [h / s for h, s in zip(totals["host_box_paste"], totals["torchvision_paste"])]),
    }
    if "row_major_copy" in totals:
        result["ratio_column_major_vs_row_major"] = common.stats(
            [c / r for c, r in zip(totals["host_box_paste"], totals["row_major_copy"])])
    return result


def main(argv: list[str] | None = None) -> dict:
    p = common.parser(__doc__.split("\n")[0])
    p.add_argument("--arch", choices=tuple(common.ARCHS), default="light")
    p.add_argument("--images", type=int, default=10, help="val images per pass (the split's first N; 0: all)")
    p.add_argument("--reps", type=int, default=3, help="interleaved repetitions of each variant")
    p.add_argument("--score-thresh", type=float, default=0.0,
                   help="the model's box score threshold (0: every image gets detections_per_img detections)")
    args = p.parse_args(argv)
    if args.images < 0:
        p.error(f"--images {args.images}: must be 0 (all) or a positive count")
    common.setup(args)
    with common.dataset(args) as root:
        config = common.study_config(args, {"model": {"arch": common.ARCHS[args.arch]}})
        train_samples, val_samples = common.sample_sets(root, config)
        if args.images:
            val_samples.stems = val_samples.stems[: args.images]
        device = torch.device(config.train.device)
        pretrained = common.pseudo_pretrained(config, common.batches(train_samples, 2, 2))
        model = build_model(config.model, pretrained).to(device).eval()
        model.roi_heads.score_thresh = args.score_thresh
        loader = engine._loader(val_samples, config.train.eval_batch_size, config.data.num_workers, 0.0, None)
        with common.GpuSampler(args.device) as gpu:
            measured = measure(model, loader, device, args.reps)
    run = {"arch": config.model.arch, "images": len(val_samples), "detections_per_img": config.model.detections_per_img,
           "rpn_test_proposals": config.model.rpn_test_proposals, "reps": args.reps, "gpu_util_pct": gpu.mean,
           **measured}
    seconds = measured["seconds"]
    common.log(f"{args.arch}: {measured['detections']} detections on {len(val_samples)} images; host-box / torchvision "
               f"{measured['ratio_host_box_vs_torchvision']['median']:.3f} (predict "
               f"{seconds['host_box_paste']['predict_s']['median']:.2f} vs "
               f"{seconds['torchvision_paste']['predict_s']['median']:.2f} s), identical masks: "
               f"{measured['masks_identical_torchvision_vs_host_box']}"
               + (f"; column-major / row-major {measured['ratio_column_major_vs_row_major']['median']:.3f}"
                  if "ratio_column_major_vs_row_major" in measured else ""))
    return common.emit("mask_paste", args, {"runs": [run]})


if __name__ == "__main__":
    main()
