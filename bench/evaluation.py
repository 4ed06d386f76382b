"""Evaluation cost: the per-epoch val evaluation as a fraction of an epoch; pycocotools vs faster-coco-eval.

1. ``fit`` trains one epoch on the train split and evaluates on val, as every trial does; its
   own ``epoch_time_s`` / ``eval_time_s`` give the fraction.
2. The evaluation is then split into inference (``predict``), conversion to COCO results
   (``to_coco_results``: mask thresholding and RLE) and scoring (``coco_metrics``:
   pycocotools bbox + segm), and the scoring is repeated with faster-coco-eval on the same
   predictions, interleaved, checking that all six numbers agree to 1e-4.

Three prediction sets: the 1-epoch model as it is; ``dense``: the same model with its score
threshold at 0, so every image gets ``detections_per_img`` detections (the cost ceiling);
``jittered_gt``: the ground truth shifted, scored at random and padded with false positives,
whose AP lies mid-range and so checks the two scorers' agreement where it matters.

With ``--profile FILE``, ``fit`` runs under ``torch.profiler`` and FILE receives its op tables
(by self CPU time, and on a GPU by self device time): where ``fit``'s training and evaluation
spend the host's time, e.g. waiting for the data loader (``enumerate(DataLoader)…``), in
``Optimizer.step`` or in a host–device sync. The profiler's own overhead inflates that run's
times; profile a separate run from the one whose fraction you report.

    python -m bench.evaluation
    python -m bench.evaluation --device cuda
    python -m bench.evaluation --device cuda --epochs 2 --profile fit_profile.txt
"""

from __future__ import annotations

import contextlib
import copy
import io
import sys
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np
import torch

from bench import common
from pedtune.data.dataset import SampleSet
from pedtune.engine.coco_eval import METRIC_NAMES, _rle, coco_index, coco_metrics, ground_truth, to_coco_results
from pedtune.engine.train import _loader, fit, predict

AGREEMENT = 1e-4
PROFILE_ROWS = 30


@contextlib.contextmanager
def profiled(path: Path | None, device: str, title: str):
    """Run the block under torch.profiler and append its op tables to ``path`` (no-op without one)."""
    if path is None:
        yield
        return
    activities = [torch.profiler.ProfilerActivity.CPU]
    if device == "cuda":
        activities.append(torch.profiler.ProfilerActivity.CUDA)
    with torch.profiler.profile(activities=activities) as profiler:
        yield
    averages = profiler.key_averages()
    sorts = ["self_cpu_time_total"] + (["self_device_time_total"] if device == "cuda" else [])
    with path.open("a", encoding="utf-8") as handle:
        for sort in sorts:
            handle.write(f"# {title}: top {PROFILE_ROWS} by {sort}\n")
            handle.write(averages.table(sort_by=sort, row_limit=PROFILE_ROWS) + "\n\n")


def jittered_gt(samples: SampleSet, rng: np.random.Generator, extra: int = 5) -> list[dict]:
    """Ground truth moved by a few pixels, with random scores, plus random false positives."""
    results = []
    for index in range(len(samples)):
        sample = samples[index]
        height, width = sample.image.shape[1:]
        for mask in sample.masks.numpy():
            shifted = np.roll(mask, tuple(rng.integers(-4, 5, size=2)), axis=(0, 1))
            ys, xs = np.nonzero(shifted)
            if len(xs) == 0:
                continue
            box = [float(xs.min()), float(ys.min()), float(xs.max() - xs.min() + 1), float(ys.max() - ys.min() + 1)]
            results.append({"image_id": index, "category_id": 1, "bbox": box, "score": float(rng.uniform(0.2, 1.0)),
                            "segmentation": _rle(shifted)})
        for _ in range(extra):
            h, w = int(rng.integers(8, max(9, height // 2))), int(rng.integers(4, max(5, width // 4)))
            y, x = int(rng.integers(0, height - h + 1)), int(rng.integers(0, width - w + 1))
            mask = np.zeros((height, width), dtype=bool)
            mask[y : y + h, x : x + w] = True
            results.append({"image_id": index, "category_id": 1, "bbox": [float(x), float(y), float(w), float(h)],
                            "score": float(rng.uniform(0.0, 0.8)), "segmentation": _rle(mask)})
    return results


def time_it(fn, *args: Any) -> tuple[Any, float]:
    start = common.timer()
    out = fn(*args)
    return out, common.timer() - start


def compare(coco_gt, results: list[dict], reps: int) -> dict[str, Any]:
    """Both scorers on the same results, interleaved; each gets its own copy (loadRes edits them)."""
    times: dict[str, list[float]] = {"pycocotools": [], "faster_coco_eval": []}
    scores: dict[str, dict[str, float]] = {}
    for rep in range(reps):
        order = ("pycocotools", "faster_coco_eval") if rep % 2 == 0 else ("faster_coco_eval", "pycocotools")
        for name in order:
            data = copy.deepcopy(results)
            if name == "pycocotools":
                scores[name], seconds = time_it(coco_metrics, coco_gt, data)
            else:
                # Indexing the ground truth is timed here too: a conservative comparison.
                scores[name], seconds = time_it(
                    lambda: coco_metrics(coco_index(copy.deepcopy(coco_gt.coco.dataset), "faster_coco_eval"), data))
            times[name].append(seconds)
    diff = max(abs(scores["pycocotools"][k] - scores["faster_coco_eval"][k]) for k in METRIC_NAMES)
    pyc, fast = (min(times[k]) for k in ("pycocotools", "faster_coco_eval"))
    return {
        "detections": len(results),
        "seconds": {k: common.stats(v) for k, v in times.items()},
        "speedup_faster_vs_pycocotools": round(pyc / fast, 2),
        "max_abs_diff": diff, "agree_1e-4": diff <= AGREEMENT,
        "metrics": scores,
    }


def proposal_counts(model: torch.nn.Module, loader: Any, device: torch.device, counts: list[int],
                    reps: int) -> dict[str, Any]:
    """``predict`` time with the RPN keeping N proposals per image at test time (torchvision: 1000).

    The box head runs on every proposal, so at small sizes inference time follows N;
    torchvision's own 320 px mobile detector keeps 150. Interleaved like the scorers.
    """
    rpn = model.rpn
    saved = dict(rpn._pre_nms_top_n), dict(rpn._post_nms_top_n)
    times: dict[int, list[float]] = {n: [] for n in counts}
    try:
        for rep in range(reps):
            for n in counts if rep % 2 == 0 else counts[::-1]:
                rpn._pre_nms_top_n["testing"] = rpn._post_nms_top_n["testing"] = n
                times[n].append(time_it(predict, model, loader, device)[1])
    finally:
        rpn._pre_nms_top_n, rpn._post_nms_top_n = saved
    return {str(n): common.stats(t) for n, t in times.items()}


def main(argv: list[str] | None = None) -> dict:
    p = common.parser(__doc__.split("\n")[0])
    p.add_argument("--arch", choices=tuple(common.ARCHS), default="light")
    p.add_argument("--train-images", type=int, default=None, help="train on the first N of the split (default: all)")
    p.add_argument("--epochs", type=int, default=1,
                   help="epochs to train; the fraction is the last epoch's (the first also pays CUDA's warm-up)")
    p.add_argument("--reps", type=int, default=5, help="interleaved repetitions of each scorer")
    p.add_argument("--proposals", type=int, nargs="+", default=[1000, 300, 150],
                   help="test-time RPN proposal counts to time predict with (1000: the project's)")
    p.add_argument("--proposal-reps", type=int, default=2, help="interleaved repetitions of each proposal count")
    p.add_argument("--profile", type=Path, default=None,
                   help="run fit under torch.profiler and append its op tables to this text file")
    args = p.parse_args(argv)
    common.setup(args)
    runs = []
    with common.dataset(args) as root:
        for amp in common.amp_modes(args):
            # One epoch and no sweep: fifo, so params.yaml's ASHA grace period (2) does not apply.
            config = common.study_config(args, {"model": {"arch": common.ARCHS[args.arch]},
                                                "train": {"epochs": args.epochs, "amp": amp}, "tune": {"scheduler": "fifo"}})
            train_samples, val_samples = common.sample_sets(root, config)
            if args.train_images:
                train_samples.stems = train_samples.stems[: args.train_images]
            pretrained = common.pseudo_pretrained(config, common.batches(train_samples, 2, 2))
            title = f"fit: {config.model.arch}, AMP {'on' if amp else 'off'}, {args.epochs} epochs, {args.device}"
            with common.GpuSampler(args.device) as gpu, contextlib.redirect_stderr(io.StringIO()), \
                    profiled(args.profile, args.device, title):
                fitted = fit(config, train_samples, val_samples, pretrained)
            for number, row in enumerate(fitted.history, start=1):
                common.log(f"epoch {number}: {row['epoch_time_s']:.1f} s, eval {row['eval_time_s']:.2f} s "
                           f"({100 * row['eval_time_s'] / row['epoch_time_s']:.1f} %)")
            epoch = fitted.history[-1]
            fraction = epoch["eval_time_s"] / epoch["epoch_time_s"]

            device = torch.device(config.train.device)
            loader = _loader(val_samples, config.train.eval_batch_size, config.data.num_workers, 0.0, None)
            coco_gt = ground_truth(val_samples)
            model = fitted.model
            config_score_thresh = model.roi_heads.score_thresh
            sets: dict[str, Any] = {}
            for name in ("trained", "dense"):
                if name == "dense":
                    model.roi_heads.score_thresh = 0.0
                predictions, predict_s = time_it(predict, model, loader, device)
                results, convert_s = time_it(
                    lambda: [r for image_id, pr in predictions for r in to_coco_results(image_id, pr)])
                sets[name] = {"predict_s": round(predict_s, 3), "to_coco_results_s": round(convert_s, 3),
                              **compare(coco_gt, results, args.reps)}
            sets["jittered_gt"] = compare(coco_gt, jittered_gt(val_samples, np.random.default_rng(0)), args.reps)
            model.roi_heads.score_thresh = config_score_thresh
            proposals = proposal_counts(model, loader, device, args.proposals, args.proposal_reps)
            common.log("predict s by test proposals: " + ", ".join(f"{n}: {v['median']:.2f}" for n, v in proposals.items()))
            for name, s in sets.items():
                common.log(f"{name}: {s['detections']} detections, pycocotools {s['seconds']['pycocotools']['median']:.3f} s, "
                           f"faster {s['seconds']['faster_coco_eval']['median']:.3f} s, max diff {s['max_abs_diff']:.1e}")
            trained = sets["trained"]
            scoring_saved = trained["seconds"]["pycocotools"]["median"] - trained["seconds"]["faster_coco_eval"]["median"]
            runs.append({
                "arch": config.model.arch, "amp": amp, "train_images": len(train_samples), "val_images": len(val_samples),
                "epochs": args.epochs, "epoch_time_s": round(epoch["epoch_time_s"], 3), "eval_time_s": round(epoch["eval_time_s"], 3),
                "epoch_times_s": [round(row["epoch_time_s"], 3) for row in fitted.history],
                "eval_times_s": [round(row["eval_time_s"], 3) for row in fitted.history],
                "eval_fraction": round(fraction, 4),
                "eval_fraction_with_faster_coco_eval": round((epoch["eval_time_s"] - scoring_saved) / (epoch["epoch_time_s"] - scoring_saved), 4),
                "target": "<= 0.05", "gpu_util_pct": gpu.mean, "prediction_sets": sets,
                "predict_s_by_test_proposals": proposals, "profiled": args.profile is not None,
            })
    return common.emit("evaluation", args, {"runs": runs})


if __name__ == "__main__":
    main()
