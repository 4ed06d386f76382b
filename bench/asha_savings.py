"""ASHA's savings: the same searcher and seed with ASHA and with FIFO; trial-epochs used and best val mAP.

Both sweeps run through the project's driver (``pedtune.stages.tune._run_sweep``) with the
real ``fit``. To run in minutes on a CPU the data is synthetic and tiny, and each trial's
model samples fewer RoIs and proposals (``--roi-batch``, ``--proposals``: same code path,
less per-RoI work; the light model spends most of a step in its RoI heads at tiny sizes).
There are no COCO weights offline and a detector trained from scratch scores ~0 mAP for
hundreds of steps, so the trials fine-tune (as the real sweep does) from a model first
trained here on the same synthetic train split for ``--pretrain-epochs``.
The noise is the spread of the initial configuration's final val mAP over training seeds.

    python -m bench.asha_savings                    # 8 trials x 4 epochs, 2 at a time
"""

from __future__ import annotations

import contextlib
import io
import os
import statistics
import sys
import tempfile
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import ray.cloudpickle
import torch

from bench import common
from pedtune.config import StudyConfig, with_train_overrides
from pedtune.data.dataset import SampleSet
from pedtune.engine.train import EpochHook, TrainedHook


class SmallHeadsFit:
    """``fit`` with the model's RoI sampling and proposal counts cut down (in this process only)."""

    def __init__(self, roi_batch: int, proposals: int) -> None:
        self.roi_batch, self.proposals = roi_batch, proposals

    def __call__(self, config: StudyConfig, train_samples: SampleSet, eval_samples: SampleSet,
                 pretrained: Mapping[str, torch.Tensor] | None = None, on_epoch_end: EpochHook | None = None,
                 resume: Mapping[str, Any] | None = None, on_epoch_trained: TrainedHook | None = None) -> Any:
        from pedtune.engine import train as engine
        from pedtune.model import factory

        def build(cfg: Any, weights: Any = None, **kwargs: Any) -> torch.nn.Module:
            model = factory.build_model(cfg, weights, **kwargs)
            model.roi_heads.fg_bg_sampler.batch_size_per_image = self.roi_batch
            model.rpn._pre_nms_top_n = {"training": self.proposals * 2, "testing": self.proposals}
            model.rpn._post_nms_top_n = {"training": self.proposals, "testing": self.proposals}
            return model

        original, engine.build_model = engine.build_model, build
        try:
            with contextlib.redirect_stderr(io.StringIO()):
                return engine.fit(config, train_samples, eval_samples, pretrained, on_epoch_end, resume, on_epoch_trained)
        finally:
            engine.build_model = original


ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])


def sweep(config: StudyConfig, stores: tuple, pretrained: dict, fit_fn: SmallHeadsFit, workdir: Path) -> dict[str, Any]:
    from ray import tune

    from pedtune.tune.results import best_trial, collect_trials

    start = common.timer()
    with contextlib.redirect_stdout(io.StringIO()):
        grid = common.driver_sweep(config, workdir / f"sweep-{uuid.uuid4().hex[:8]}", stores, pretrained, fit_fn, tune.Callback())
    wall = common.timer() - start
    records = collect_trials(grid, config)
    best = best_trial(records)
    return {
        "trial_epochs": sum(r.epochs for r in records),
        "trials": len(records), "failed": sum(r.status == "ERROR" for r in records),
        "best_final": None if best is None else round(best.final, 4),
        "best_overrides": None if best is None else best.overrides,
        "finals": [round(r.final, 4) for r in records], "epochs": [r.epochs for r in records],
        "wall_s": round(wall, 1),
    }


def main(argv: list[str] | None = None) -> dict:
    p = common.parser(__doc__.split("\n")[0])
    p.set_defaults(synthetic=True, num_images=48, image_size="64x80", min_size=64, max_size=96)
    p.add_argument("--real", action="store_true", help="use --data instead of the synthetic default")
    p.add_argument("--trials", type=int, default=8)
    p.add_argument("--epochs", type=int, default=4)
    p.add_argument("--pretrain-epochs", type=int, default=10, help="warm start trained from scratch here")
    p.add_argument("--concurrency", type=int, default=2)
    p.add_argument("--grace", type=int, default=1)
    p.add_argument("--reduction", type=int, default=3)
    p.add_argument("--searcher", choices=("hyperopt", "optuna", "random"), default="hyperopt")
    p.add_argument("--noise-seeds", type=int, default=3, help="training seeds of the initial config for the noise")
    p.add_argument("--roi-batch", type=int, default=32)
    p.add_argument("--proposals", type=int, default=50)
    args = p.parse_args(argv)
    if args.real:
        args.synthetic = False
    common.setup(args)
    resources = {"cpu": max(1, (os.cpu_count() or 2) // args.concurrency) if args.device == "cpu" else 1,
                 "gpu": 1 / args.concurrency if args.device == "cuda" else 0}
    base = {
        "model": {"weights": "none", "detections_per_img": 20},
        "train": {"epochs": args.epochs, "warmup_epochs": 0.25},
        "tune": {"num_samples": args.trials, "max_concurrent": args.concurrency, "searcher": args.searcher,
                 "seed": 0, "resources_per_trial": resources,
                 "asha": {"grace_period": args.grace, "reduction_factor": args.reduction}},
    }
    fit_fn = SmallHeadsFit(args.roi_batch, args.proposals)
    out: dict[str, Any] = {}
    with common.dataset(args) as root, tempfile.TemporaryDirectory(prefix="pedtune-bench-asha-") as tmp:
        config = common.study_config(args, base)
        stores = common.sample_sets(root, config)
        pretrained: dict[str, torch.Tensor] = {}  # empty: trials start from scratch
        if args.pretrain_epochs:
            start = common.timer()
            warm = common.study_config(args, common.merge(base, {"train": {
                "epochs": args.pretrain_epochs, "lr": 0.02, "lr_schedule": "constant", "warmup_epochs": 0.5}}))
            warm_fit = fit_fn(warm, *stores)
            pretrained = {k: v.detach().clone() for k, v in warm_fit.model.state_dict().items()}
            out["pretrain"] = {"epochs": args.pretrain_epochs, "final": round(warm_fit.final[config.tune.metric], 4),
                               "wall_s": round(common.timer() - start, 1)}
            common.log(f"warm start: {args.pretrain_epochs} epochs from scratch, val {config.tune.metric} "
                       f"{out['pretrain']['final']}")
        for scheduler in ("asha", "fifo"):
            cfg = common.study_config(args, common.merge(base, {"tune": {"scheduler": scheduler}}))
            out[scheduler] = sweep(cfg, stores, pretrained, fit_fn, Path(tmp))
            common.log(f"{scheduler}: {out[scheduler]['trial_epochs']} trial-epochs, best val {cfg.tune.metric} "
                       f"{out[scheduler]['best_final']} in {out[scheduler]['wall_s']} s")
        finals, initial = [], common.study_config(args, base)
        for seed in range(args.noise_seeds):
            # Only the train section is re-validated: a study file rejects evaluate.seeds holding train.seed.
            cfg = with_train_overrides(initial, {"train.seed": seed})
            finals.append(fit_fn(cfg, *stores, pretrained).final[cfg.tune.metric])
        noise = statistics.stdev(finals) if len(finals) > 1 else None
    a, f = out["asha"], out["fifo"]
    diff = None if None in (a["best_final"], f["best_final"]) else round(a["best_final"] - f["best_final"], 4)
    return common.emit("asha_savings", args, {
        "metric": config.tune.metric, "searcher": args.searcher, "trials": args.trials, "epochs": args.epochs,
        "asha": {"grace_period": args.grace, "reduction_factor": args.reduction},
        "sweeps": out, "epoch_fraction_asha_vs_fifo": round(a["trial_epochs"] / f["trial_epochs"], 3),
        "best_diff_asha_minus_fifo": diff,
        "noise": {"initial_config_finals_over_seeds": [round(v, 4) for v in finals],
                  "stdev": None if noise is None else round(noise, 4)},
        "within_noise": None if diff is None or noise is None else bool(diff >= -2 * noise),
        "targets": {"epoch_fraction": "<= 0.4", "best": "within noise of FIFO's"},
        "note": "synthetic data, tiny images, cut-down RoI heads; a CPU-sized stand-in for the real sweep",
    })


if __name__ == "__main__":
    main()
