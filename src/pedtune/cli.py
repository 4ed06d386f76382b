"""pedtune: one subcommand per DVC stage of the PennFudanPed Mask R-CNN tuning study.

Each subcommand validates params.yaml, runs one stage and maps known errors to a message
and a non-zero exit code (2 for a bad params.yaml or one sized for a GPU on a machine without
CUDA, 1 for bad data or an unusable store)."""

from __future__ import annotations

import argparse
import logging
from collections.abc import Callable
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from pedtune import console, paths
from pedtune.config import ConfigError, StudyConfig, load_config
from pedtune.errors import PedtuneError, UnauthenticatedClusterError
from pedtune.tracking.server import check_reachable


def _fetch(config: StudyConfig) -> None:
    from pedtune.stages.fetch import run_fetch

    run_fetch(config)


def _weights(config: StudyConfig) -> None:
    from pedtune.stages.weights import run_weights

    run_weights(config)


def _split(config: StudyConfig) -> None:
    from pedtune.stages.split import run_split

    run_split(config)


def _train(config: StudyConfig) -> None:
    from pedtune.stages.train import run_train

    run_train(config)


def _tune(config: StudyConfig) -> None:
    from pedtune.stages.tune import run_tune

    run_tune(config)


def _evaluate(config: StudyConfig) -> None:
    from pedtune.stages.evaluate import run_evaluate

    run_evaluate(config)


def _record(config: StudyConfig) -> None:
    from pedtune.stages.record import run_record

    run_record(config)


def _compare(config: StudyConfig) -> None:
    from pedtune.stages.compare import run_compare

    run_compare(config)


def _check(config: StudyConfig) -> None:
    """``main`` has validated the file, timed the work on this machine and states the cache's memory."""


STAGES: dict[str, tuple[Callable[[StudyConfig], None], str]] = {
    "check": (_check, "validate params.yaml, time its work on this machine and exit"),
    "fetch": (_fetch, "get the dataset (PennFudanPed or COCO; url, local zip/dir or synthetic) into data/dataset"),
    "weights": (_weights, "resolve model.weights into models/pretrained.pt"),
    "split": (_split, "draw the seeded train/val/test split into data/split.json"),
    "train": (_train, "train the params.yaml configuration, log it to MLflow"),
    "tune": (_tune, "search hyperparameters with Ray Tune (resumes an interrupted sweep)"),
    "evaluate": (_evaluate, "initial vs tuned config over several seeds on the test split"),
    "record": (_record, "train record.levels' grid of the search space at record.seeds into a benchmark table"),
    "compare": (_compare, "replay Ray Tune sweeps (compare.searchers × schedulers × budgets) on the recorded table"),
}
LOGGING_STAGES = ("train", "tune", "evaluate")
# Stopped within seconds when params.yaml is sized for a GPU this machine lacks (pedtune.engine.estimate).
GUARDED_STAGES = ("check", "train", "tune", "evaluate")
EXIT_BAD_INPUT = 2


def package_version() -> str:
    try:
        return version("pedtune")
    except PackageNotFoundError:  # run from a source tree that was never installed
        return "unknown (not installed)"


def _dvc_deps(check: bool, log: logging.Logger) -> int:
    from pedtune.dvc_deps import stale_pipelines, write_dvc_deps

    if check:
        stale = stale_pipelines()
        for name in stale:
            log.error(f"{name}: its code deps differ from the stage modules' imports; run `pedtune dvc-deps`")
        return 1 if stale else 0
    changed = write_dvc_deps()
    console.summary(log, "code deps " + ("rewritten" if changed else "already current"), wrote=changed)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="pedtune", description=__doc__)
    parser.add_argument("--version", action="version", version=f"pedtune {package_version()}")
    parser.add_argument("--params", default="params.yaml", help="the study's parameters (default: %(default)s)")
    quiet_help = "print only warnings, errors and the closing summary (no progress)"
    parser.add_argument("-q", "--quiet", action="store_true", help=quiet_help)
    # Also accepted after the stage (`pedtune train --quiet`); SUPPRESS keeps the one given before it.
    after_stage = argparse.ArgumentParser(add_help=False)
    after_stage.add_argument("-q", "--quiet", action="store_true", default=argparse.SUPPRESS, help=quiet_help)
    sub = parser.add_subparsers(dest="stage", required=True, metavar="STAGE")
    for name, (_, help_text) in STAGES.items():
        sub.add_parser(name, help=help_text, description=help_text, parents=[after_stage])
    readme_help = "rewrite README.md's Results section from the published study (a git-tracked folder under studies/)"
    readme = sub.add_parser("readme-results", help=readme_help, description=readme_help)
    readme.add_argument("--readme", default="README.md", help="the README to rewrite (default: %(default)s)")
    readme.add_argument("--study", default=str(paths.README_STUDY),
                        help="the published study's folder, from the README's folder (default: %(default)s)")
    profile_help = "print the -S options that make params.yaml into profiles/NAME.yaml, for dvc exp run"
    profile = sub.add_parser("profile", help=profile_help, description=profile_help,
                             epilog="e.g.  dvc exp run -n cpu-quick $(pedtune profile cpu-quick)")
    profile.add_argument("name", help="a profile in profiles/ (cpu-quick, smoke)")
    export_help = "write a PennFudanPed folder (default: the fetch stage's) as a COCO dataset: images/ + annotations.json"
    export = sub.add_parser("export-coco", help=export_help, description=export_help,
                            epilog="then: data.format: coco, data.source: dir, data.local_path: DEST/images, "
                                   "data.annotations: DEST/annotations.json")
    export.add_argument("dest", help="the folder to write (replaced whole)")
    export.add_argument("--source", default="data/dataset", help="the PennFudanPed folder (default: %(default)s)")
    reference_help = "write docs/params.md, the params reference, from the schema's descriptions"
    reference = sub.add_parser("params-reference", help=reference_help, description=reference_help)
    reference.add_argument("--output", default="docs/params.md", help="where to write it (default: %(default)s)")
    deps_help = "write the src/pedtune deps of dvc.yaml's stages from each stage module's imports"
    deps = sub.add_parser("dvc-deps", help=deps_help, description=deps_help)
    deps.add_argument("--check", action="store_true", help="only report stale pipeline files (exit 1 if any)")
    predict_help = "predict images (files, folders, globs) with a kept or registered model: COCO results and overlays"
    predict = sub.add_parser("predict", help=predict_help, description=predict_help,
                             epilog="exit status 1 when an image could not be decoded (the others are predicted)",
                             parents=[after_stage])
    predict.add_argument("images", nargs="+", help="image files, folders of images, or glob patterns ('photos/*.jpg')")
    predict.add_argument("--model", default=None,
                         help="a model file pedtune wrote (such as the evaluate stage's "
                              f"{paths.TUNED_MODEL.as_posix()}), or an MLflow model URI such as models:/NAME/3 "
                              "(from mlflow.tracking_uri's store) (default: models:/NAME@champion, NAME being "
                              "mlflow.registered_model)")
    predict.add_argument("--output", default="predictions",
                         help="the folder to write, replaced whole (default: %(default)s)")
    predict.add_argument("--annotations", default=None,
                         help="a COCO JSON listing the images: also score the predictions against it")
    predict.add_argument("--batch-size", type=int, default=None, help="images per batch (default: train.eval_batch_size)")
    predict.add_argument("--score-threshold", type=float, default=None,
                         help="the lowest score drawn on the overlays (default: the registered model's, "
                              "else evaluate.score_threshold); detections.json keeps every detection")
    costs_help = "rewrite src/pedtune/engine/model_costs.json, each arch's FLOPs per image (what `check` scales)"
    sub.add_parser("model-costs", help=costs_help, description=costs_help)
    publish_help = "write a study that `dvc repro` ran to studies/NAME, to be committed: report, metrics, tables, " \
                   "pictures, its MLflow runs and provenance"
    publish = sub.add_parser("publish", help=publish_help, description=publish_help,
                             epilog="refused, writing nothing, if a stage changed since it ran or ran code other than "
                                    "its commit's")
    publish.add_argument("name", help="the study's name, e.g. cpu-quick (README's Results read studies/cpu-quick)")
    publish.add_argument("--studies", default=str(paths.STUDIES), help="the folder of studies (default: %(default)s)")
    import_help = "import a published study's MLflow runs (studies/NAME/mlflow/runs.json) into an MLflow store"
    import_runs = sub.add_parser("import-runs", help=import_help, description=import_help,
                                 epilog="then: mlflow ui --backend-store-uri sqlite:///mlruns/mlflow.db")
    import_runs.add_argument("study", help="the published study's folder, e.g. studies/cpu-quick")
    import_runs.add_argument("--tracking-uri", default=None,
                             help="the store to import into (default: params.yaml's mlflow.tracking_uri)")
    import_runs.add_argument("--experiment", default=None,
                             help="the experiment to import into (default: published-NAME, created if absent)")
    layout_help = "rewrite docs/development.md's layout section from the tree and the modules' docstrings"
    layout = sub.add_parser("docs-layout", help=layout_help, description=layout_help)
    layout.add_argument("--page", default="docs/development.md", help="the page to rewrite (default: %(default)s)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    console.configure(args.stage, quiet=args.quiet)
    log = console.get(__name__)
    try:
        if args.stage == "readme-results":
            from pedtune.evaluate.readme import update_readme

            update_readme(args.readme, args.study)
            return 0
        if args.stage == "profile":
            from pedtune.config.profile import FAILED_OPTION, profile_options

            try:
                print(" ".join(profile_options(args.name, args.params)))
            except ConfigError:
                # Read by `dvc exp run ... $(pedtune profile NAME)`: an option DVC refuses, so that a
                # failed lookup stops the experiment instead of running params.yaml's defaults.
                print(FAILED_OPTION)
                raise
            return 0
        if args.stage == "export-coco":
            from pedtune.data.export import export_coco

            export_coco(Path(args.source), Path(args.dest))
            return 0
        if args.stage == "params-reference":
            from pedtune.config.reference import write_reference

            write_reference(args.output)
            return 0
        if args.stage == "docs-layout":
            from pedtune.docs_layout import write_layout

            changed = write_layout(Path(args.page))
            console.summary(log, "layout " + ("rewritten" if changed else "already current"), wrote=[args.page])
            return 0
        if args.stage == "dvc-deps":
            return _dvc_deps(args.check, log)
        if args.stage == "model-costs":
            from pedtune.engine.model_cost import COSTS_FILE, write_costs

            changed = write_costs()
            console.summary(log, "model costs " + ("rewritten" if changed else "already current"), wrote=[COSTS_FILE])
            return 0
        config = load_config(args.params)
        if args.stage == "publish":
            from pedtune.publish import publish

            publish(args.name, config, studies=Path(args.studies))
            return 0
        if args.stage == "import-runs":
            from pedtune.tracking.import_study import import_study

            import_study(Path(args.study), config.mlflow, args.tracking_uri, args.experiment)
            return 0
        if args.stage == "predict":
            from pedtune.predict.command import run_predict
            from pedtune.tracking.registry import champion_uri

            outcome = run_predict(config, args.images, args.model or champion_uri(config.mlflow.registered_model),
                                  Path(args.output),
                                  Path(args.annotations) if args.annotations else None, args.batch_size,
                                  args.score_threshold)
            return 1 if outcome.skipped else 0
        if args.stage in LOGGING_STAGES:
            check_reachable(config.mlflow)
        found = None
        if args.stage in GUARDED_STAGES:
            from pedtune.engine.estimate import guard  # imports torch: only where training may follow

            found = guard(config, args.stage)  # before the store, the data and any training
        STAGES[args.stage][0](config)
        if args.stage == "check":
            from pedtune.data.cache_memory import cache_statement  # noqa: PLC0415 - reads the fetched data

            estimate = f"\nestimated on this machine: {found.describe()}\n({found.basis(config)})" if found else ""
            console.summary(log, f"{args.params} is valid{estimate}\n{cache_statement(config)}")
    except (ConfigError, UnauthenticatedClusterError) as error:
        log.error(str(error))
        return EXIT_BAD_INPUT
    except PedtuneError as error:
        log.error(str(error))
        return 1
    except KeyboardInterrupt:
        log.warning("interrupted")
        return 130
    return 0
