"""The evaluate stage's registry step (the kept model logged and registered in MLflow) against the stage's training.

The registry step is what ``stages.evaluate.register_kept`` does once the runs are over: read
``models/tuned.pt``, log it as an MLflow model (``tracking.registry.register_model``: saved,
logged to the run, a new version of the registered model, the champion rule) and log its time.
It is timed here on a scratch SQLite store and artifact folder, with a model file of the
config's architecture (``common.pseudo_pretrained`` weights: a real model's size).

The stage it is a share of is bounded from below by its runs' training steps alone:
``2 configurations × len(evaluate.seeds) runs × evaluate.epochs × train images`` at the
training step's measured rate (the project's ``train_one_epoch`` on ``--steps`` batches of the
split, as ``train_step.py`` times it; no val or test pass, no data loading, no start-up). The
share reported, ``registry ÷ (registry + that bound)``, is therefore an upper bound (of a study whose
tuned configuration differs from the initial one: when the sweep keeps the initial configuration,
the stage trains half the runs, and the share is at most twice the figure). The
share is taken with the first registration of the process (``registry_first_s``: it pays MLflow's
one-off costs, as the stage's one registration does); later ones (``registry_again_s``) and the
step blocks then alternate, ``--reps`` times each.

    python -m bench.registry --data PATH
    python -m bench.registry --data PATH --params params.yaml --arch r50
"""

from __future__ import annotations

import copy
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch

from bench import common
from bench.train_step import project_epoch
from pedtune.config import StudyConfig
from pedtune.engine.train import build_optimizer
from pedtune.model.checkpoint import read_checkpoint, save_model
from pedtune.model.factory import build_model
from pedtune.tracking.registry import Candidate, model_metadata, register_model
from pedtune.tracking.store import log_metrics, open_store, tracked_run


def register_once(config: StudyConfig, store: Any, run_id: str, model_file: Path,
                  candidate: Candidate) -> tuple[float, int]:
    """Seconds of one registry step, as ``register_kept`` takes it (from reading the model file), and the
    logged model's size in bytes."""
    started = time.perf_counter()
    checkpoint = read_checkpoint(model_file)
    metadata = model_metadata(checkpoint.categories, checkpoint.category_ids, config.model.min_size,
                              config.model.max_size, config.evaluate.score_threshold)
    registration = register_model(store, run_id, config.mlflow.registered_model, checkpoint.model(), candidate,
                                  metadata, {"git_commit": "bench"})
    elapsed = time.perf_counter() - started
    log_metrics(store, run_id, {"registry_time_s": elapsed, "model_size_bytes": registration.size_bytes}, step=0)
    return elapsed, registration.size_bytes


def main(argv: list[str] | None = None) -> dict:
    p = common.parser(__doc__.split("\n")[0])
    p.add_argument("--arch", choices=tuple(common.ARCHS), default="light")
    p.add_argument("--steps", type=int, default=3, help="training batches per timed block")
    p.add_argument("--reps", type=int, default=3, help="alternating repetitions of each block")
    args = p.parse_args(argv)
    common.setup(args)
    with common.dataset(args) as root, tempfile.TemporaryDirectory(prefix="pedtune-bench-registry-") as folder:
        scratch = Path(folder)
        config = common.study_config(args, {
            "model": {"arch": common.ARCHS[args.arch]},
            "mlflow": {"tracking_uri": f"sqlite:///{scratch}/mlruns/mlflow.db",
                       "artifact_location": str(scratch / "mlruns" / "artifacts")}})
        train_samples, _ = common.sample_sets(root, config)
        split = common.split_of(root, config)
        batch_size = config.train.batch_size
        batches = common.batches(train_samples, batch_size, args.steps)
        pretrained = common.pseudo_pretrained(config, batches[:2])
        device = torch.device(config.train.device)
        model = build_model(config.model, pretrained).to(device)
        model_file = scratch / "models" / "tuned.pt"
        save_model(model.state_dict(), config.model, config.train, {1: "person"}, {1: 1}, model_file)
        optimizer = build_optimizer([p for p in model.parameters() if p.requires_grad], config.train)
        model_state, optimizer_state = copy.deepcopy(model.state_dict()), copy.deepcopy(optimizer.state_dict())
        store = open_store(config.mlflow)
        candidate = Candidate("bench-dataset", "bench-split", 0.5, 0.01)
        images_per_block = sum(len(images) for images, _ in batches)

        def train_block() -> float:
            model.load_state_dict(model_state)
            optimizer.load_state_dict(optimizer_state)
            torch.manual_seed(1)
            common.sync(device)
            start = common.timer()
            project_epoch(model, batches, optimizer, config, device)
            common.sync(device)
            return images_per_block / (common.timer() - start)

        registry_s: list[float] = []
        step_rates: list[float] = []
        with tracked_run(store, "evaluate") as run_id:
            # The first registration in a process pays MLflow's one-off costs (importing mlflow.pytorch, its scan
            # of the installed packages to check the requirements): the stage registers once, so it pays them.
            first_s, size = register_once(config, store, run_id, model_file, candidate)
            train_block()
            for rep in range(args.reps):
                blocks = ("registry", "train") if rep % 2 == 0 else ("train", "registry")
                for block in blocks:
                    if block == "registry":
                        registry_s.append(register_once(config, store, run_id, model_file, candidate)[0])
                    else:
                        step_rates.append(train_block())
                common.log(f"rep {rep + 1}/{args.reps}: registry {registry_s[-1]:.2f} s, "
                           f"training {step_rates[-1]:.3f} img/s")
    seeds = len(config.evaluate.seeds)
    epochs = config.evaluate.epochs or config.train.epochs
    train_images = len(split.part(config.evaluate.train_on))
    runs = 2 * seeds
    step_rate = common.stats(step_rates)
    bound_s = runs * epochs * train_images / step_rate["median"]
    registry = common.stats(registry_s)
    share = first_s / (first_s + bound_s)
    run = {"arch": config.model.arch, "min_size": config.model.min_size, "max_size": config.model.max_size,
           "batch_size": batch_size, "steps": args.steps, "reps": args.reps, "logged_model_bytes": size,
           "registry_first_s": round(first_s, 3), "registry_again_s": registry, "train_images_per_s": step_rate,
           "evaluate_training_bound": {"runs": runs, "epochs": epochs, "train_images": train_images,
                                       "seconds": round(bound_s, 1)},
           "registry_share_of_evaluate_upper_bound": round(share, 5)}
    common.log(f"{args.arch}: registry {first_s:.2f} s (again: {registry['median']:.2f} s), "
               f"evaluate's training ≥ {bound_s:.0f} s "
               f"({runs} runs × {epochs} epochs × {train_images} images at {step_rate['median']:.3f} img/s): "
               f"share ≤ {100 * share:.2f} %")
    return common.emit("registry", args, {"runs": [run]})


if __name__ == "__main__":
    main()
