"""The whole study on a generated multi-class COCO dataset, run as docs/data.md runs it: its wall time.

Generates a COCO dataset (``--images`` images of ``--image-size``, ``--categories`` categories, with
crowd regions and images without objects: ``pedtune.data.coco_synthetic``), makes a throw-away
copy of the study (its own git repository, DVC and MLflow store) and times

    dvc exp run -n coco $(pedtune profile smoke) -S data.format=coco -S data.source=dir \\
      -S data.local_path=IMAGES -S data.annotations=JSON -S data.expected_images=null

(fetch, weights, split, train, tune, evaluate). Reports the wall time, the stages' own wall
times from their metrics files and the category names the evaluation report shows.

Usage: ``python -m bench.coco_smoke [--images 12 --image-size 64x80 --categories 3] [--json PATH]``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from bench.common import REPO, RESULTS, machine, size_of
from pedtune.config.schema import SyntheticConfig
from pedtune.data.coco_synthetic import write_synthetic_coco


def run(cmd: list[str], cwd: Path) -> str:
    result = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    if result.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed ({result.returncode}):\n{result.stdout[-3000:]}\n"
                         f"{result.stderr[-3000:]}")
    return result.stdout


def study_copy(root: Path) -> Path:
    """The study's pipeline, params, profiles and code in a git repository of their own (nothing of the
    checkout's state)."""
    root.mkdir(parents=True)
    for name in ("dvc.yaml", ".gitignore", "params.yaml"):
        shutil.copy(REPO / name, root / name)
    shutil.copytree(REPO / "src", root / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    shutil.copytree(REPO / "profiles", root / "profiles")
    (root / ".dvc").mkdir()
    shutil.copy(REPO / ".dvc" / "config", root / ".dvc" / "config")
    run(["git", "init", "-q"], root)
    run(["git", "add", "-A"], root)
    run(["git", "-c", "user.email=bench@pedtune", "-c", "user.name=bench", "commit", "-qm", "study"], root)
    return root


def wall_time(study: Path, metrics: str) -> float | None:
    path = study / "metrics" / metrics
    return json.loads(path.read_text()).get("wall_time_s") if path.is_file() else None


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--images", type=int, default=12)
    p.add_argument("--image-size", default="64x80", help="HxW")
    p.add_argument("--categories", type=int, default=3)
    p.add_argument("--json", type=Path, default=RESULTS / "coco_smoke.json")
    args = p.parse_args(argv)
    height, width = size_of(args.image_size)
    load_at_start, host = os.getloadavg()[0], machine()  # machine() notes the load as it is called
    with tempfile.TemporaryDirectory(prefix="pedtune-bench-") as folder:
        annotation = write_synthetic_coco(SyntheticConfig(num_images=args.images, height=height, width=width,
                                                          max_instances=3, categories=args.categories),
                                          Path(folder) / "mine")
        study = study_copy(Path(folder) / "study")
        profile = run(["pedtune", "profile", "smoke"], study).split()
        command = ["dvc", "exp", "run", "-n", "coco", *profile, "-S", "data.format=coco", "-S", "data.source=dir",
                   "-S", f"data.local_path={annotation.parent / 'images'}", "-S", f"data.annotations={annotation}",
                   "-S", "data.expected_images=null"]
        started = time.perf_counter()
        run(command, study)
        wall = time.perf_counter() - started
        names = [c["name"] for c in json.loads(annotation.read_text())["categories"]]
        report = (study / "results" / "evaluate" / "report.md").read_text(encoding="utf-8")
        result = {
            "benchmark": "coco_smoke", "machine": host,
            "images": args.images, "image_size": [height, width], "categories": names,
            "profile": "smoke", "wall_s": round(wall, 1),
            "stage_wall_s": {stage: wall_time(study, f"{stage}.json") for stage in ("train", "tune")},
            "categories_in_report": [name for name in names if f"| {name} |" in report],
            "loadavg_at_start": load_at_start, "loadavg_at_end": os.getloadavg()[0],
            "measured_at": round(time.time()),
        }
    text = json.dumps(result, indent=2)
    print(text)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(text + "\n")
    return result


if __name__ == "__main__":
    main()
