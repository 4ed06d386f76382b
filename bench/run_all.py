"""Run every benchmark (each in its own process), write ``bench/results/<name>.json`` and the
table of docs/performance.md (between its ``bench-table`` markers; its rows 12 in docs/methodology.md too,
between its ``scoring-table`` markers).

    python -m bench.run_all                         # all but gpu_packing, CPU defaults
    python -m bench.run_all --only train_step evaluation --wait-quiet 1.3
    python -m bench.run_all --table-only            # regenerate the table from bench/results/*.json
    python -m bench.run_all --device cuda           # on a GPU machine (AMP off and on)

The table keeps the latest result of each measurement: where two result files give the same
row (the same benchmark at the same settings), the one measured last."""

from __future__ import annotations

import argparse
import ast
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import REPO, RESULTS

PERFORMANCE_PAGE = REPO / "docs" / "performance.md"
TABLE_START, TABLE_END = "<!-- bench-table:start -->", "<!-- bench-table:end -->"

BENCHMARKS = ("train_step", "data_pipeline", "data_wait", "evaluation", "mask_paste", "tune_overhead", "asha_savings",
              "asha_budget", "memory", "checkpoint_storage", "cluster_sweep", "gpu_packing", "epoch_profile", "predict",
              "registry", "coco_indexing", "cache_memory", "original_size_scoring", "coco_smoke")
GPU_ONLY = ("gpu_packing",)  # refuses to run without CUDA: run by default only with --device cuda
ON_REQUEST = ("original_size_scoring",)  # trains a model for half an hour on 2 cores: run only with --only
OWN_DATA = ("coco_indexing", "coco_smoke")  # generate their own data and take none of the shared arguments
# The rows docs/methodology.md shows (between its scoring-table markers), generated with the table.
METHODOLOGY_PAGE = REPO / "docs" / "methodology.md"
SCORING_START, SCORING_END = "<!-- scoring-table:start -->", "<!-- scoring-table:end -->"
SCORING_ROWS = "12. "
# Shared arguments each benchmark understands; asha_savings picks its own (synthetic, tiny) data.
SHARED = ("--data", "--device", "--amp", "--threads")


def wait_quiet(threshold: float, poll_s: float = 60.0, give_up_s: float = 45 * 60) -> float:
    """Wait until the 1-minute load average is below ``threshold``; returns the load measured at."""
    start = time.monotonic()
    while (load := os.getloadavg()[0]) >= threshold and time.monotonic() - start < give_up_s:
        print(f"[run_all] load {load:.2f} >= {threshold}: waiting", file=sys.stderr, flush=True)
        time.sleep(poll_s)
    return load


def run(name: str, extra: list[str], results: Path) -> None:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    cmd = [sys.executable, "-m", f"bench.{name}", *extra, "--json", str(results / f"{name}.json")]
    print(f"[run_all] {' '.join(cmd)}", file=sys.stderr, flush=True)
    subprocess.run(cmd, cwd=REPO, env=env, check=True, stdout=subprocess.DEVNULL)


def _ok(passed: bool | None) -> str:
    return "n/a" if passed is None else ("yes" if passed else "**no**")


def _range(s: dict[str, float], fmt: str = "{:.3f}") -> str:
    return f"{fmt.format(s['median'])} ({fmt.format(s['min'])}–{fmt.format(s['max'])}, n={s['n']})"


def rows(r: dict[str, dict[str, Any]], only: str | None = None) -> list[tuple[str, str, str, str]]:
    """(measurement, result, target, met) per headline figure of each benchmark present (of result
    file ``only``, if given; the others still inform it, as asha_budget's simulation does asha_savings')."""
    out = []
    for t in _variants(r, "train_step", only):
        for run in t["runs"]:
            padding = f", padded to ×{run['size_divisible']}" if run.get("size_divisible", 32) != 32 else ""
            tag = f"{run['arch'].removeprefix('maskrcnn_')}{', AMP' if run['amp'] else ''}{padding}{_on(t)}"
            ratio = run["ratio_project_vs_bare"]
            # The warm-up pass of the first variant meets every batch shape for the first time.
            first = run.get("first_pass_images_per_s")
            first_pass = (f"; first pass over {run['padded_shapes']} batch shapes {next(iter(first.values())):.2f} img/s"
                          if first else "")
            out.append((f"1. training step, project ÷ bare loop ({tag}, {run['image_hw'][0]}×{run['image_hw'][1]})",
                        f"{_range(ratio)}; bare {run['images_per_s']['bare']['median']:.2f} img/s; "
                        f"without clipping {run['ratio_project_noclip_vs_bare']['median']:.3f}{first_pass}",
                        "≥ 0.98", _ok(ratio["median"] >= 0.98)))
    for d in _variants(r, "data_pipeline", only):
        for model, step in d["train_step"].items():
            ratios = {loader: v[model] for loader, v in d["ratio_loader_vs_step"].items()}
            best, worst = max(ratios, key=ratios.get), min(ratios, key=ratios.get)
            out.append((f"2. data loading ÷ training step ({model}, {step['images_per_s']['median']:.2f} img/s{_on(d)})",
                        f"{ratios[best]:g}× ({best}); worst {ratios[worst]:g}× ({worst})", "≥ 10×",
                        _ok(ratios[best] >= 10)))
    for w in _variants(r, "data_wait", only):
        for name, run in w["runs"].items():
            share = run["data_share"]
            target = name != "workers=0"  # the reference: decoding in the training process itself
            out.append((f"2. data wait ÷ training step, cache off ({name}, {w['arch'].removeprefix('maskrcnn_')}, "
                        f"{w['image_size'][0]} px, first {w['steps']} steps of an epoch{_on(w)})",
                        f"{100 * share['median']:.1f} % (n={share['n']}; {run['step_s']['median']:.2f} s per step)",
                        "≤ 10 %" if target else "—", _ok(share["median"] <= 0.10) if target else "—"))
    for e in _variants(r, "evaluation", only):
        for run in e["runs"]:
            sets = run["prediction_sets"]
            epochs = run.get("epochs", 1)
            out.append((f"3. val evaluation ÷ epoch ({run['arch'].removeprefix('maskrcnn_')}, {run['train_images']} train / "
                        f"{run['val_images']} val images{', AMP' if run['amp'] else ''}"
                        f"{_overridden(e, 'data.num_workers')}{', under torch.profiler' if run.get('profiled') else ''}"
                        f"{_on(e)})",
                        f"{100 * run['eval_fraction']:.1f} % ({f'epoch {epochs} of {epochs}: ' if epochs > 1 else ''}"
                        f"{run['eval_time_s']:.1f} of {run['epoch_time_s']:.1f} s)",
                        "≤ 5 %", _ok(run["eval_fraction"] <= 0.05)))
            out.append((f"3. faster-coco-eval vs pycocotools (same predictions{_on(e)})",
                        "; ".join(f"{n}: {s['speedup_faster_vs_pycocotools']:g}× faster, max Δ {s['max_abs_diff']:.0e}"
                                  for n, s in sets.items()),
                        "agree to 1e-4", _ok(all(s["agree_1e-4"] for s in sets.values()))))
    for m in _variants(r, "mask_paste", only):
        for run in m["runs"]:
            label = (f"{run['arch'].removeprefix('maskrcnn_')}, {run['images']} val images, "
                     f"{run['detections']} detections{_on(m)}")
            seconds = run["seconds"]["torchvision_paste"]
            total = seconds["predict_s"]["median"] + seconds["to_coco_results_s"]["median"]
            identical = run["masks_identical_torchvision_vs_host_box"]
            out.append((f"3. mask paste with host boxes ÷ torchvision's paste, predict + RLE ({label})",
                        f"{_range(run['ratio_host_box_vs_torchvision'])}; torchvision's {total:.2f} s; "
                        f"masks identical: {'yes' if identical else 'no'}", "identical masks", _ok(identical)))
            if "ratio_column_major_vs_row_major" in run:
                out.append((f"3. masks copied column-major ÷ row-major, predict + RLE ({label})",
                            _range(run["ratio_column_major_vs_row_major"]), "—", "—"))
    for t in _variants(r, "tune_overhead", only):
        for state, share in dict.fromkeys((run["state"], run.get("eval_share", 0)) for run in t["runs"]):
            runs = [x for x in t["runs"] if (x["state"], x.get("eval_share", 0)) == (state, share)]
            # The median run (the later of two) for each figure, with that run's breakdown beside it.
            by_ratio = sorted(runs, key=lambda x: x["ratio_wall_vs_ideal"])[len(runs) // 2]
            by_start = sorted(runs, key=lambda x: x["init_to_first_trial_s"])[len(runs) // 2]
            ratio, first = by_ratio["ratio_wall_vs_ideal"], by_start["init_to_first_trial_s"]
            every = t.get("checkpoint_every", 1)
            # Result files from before checkpoints were written during evaluation have no eval_share (0).
            written = "" if not runs[0]["checkpoint_mb"] else \
                f", written during the last {100 * share:g} % of the epoch (its evaluation)" if share else \
                ", written after the epoch"
            label = f"{t['trials']} trials × {t['epochs']} epochs × {t['epoch_s']:g} s, {t['concurrency']} at a time, " \
                    f"{runs[0]['checkpoint_mb']:g} MB checkpoints" + (f" every {every} epochs" if every != 1 else "") + written
            out.append((f"4. sweep wall ÷ ideal ({label})", f"{ratio:.3f}× (per-trial overhead "
                        f"{by_ratio['overhead_per_trial_s']:.1f} s)", "≤ 1.1×", _ok(ratio <= 1.1)))
            out.append((f"4. ray.init → first trial running ({state} checkpoints)", f"{first:.1f} s "
                        f"(ray.init {by_start['ray_init_s']:.1f} s)", "≤ 10 s", _ok(first <= 10)))
    for a in _variants(r, "asha_savings", only):
        s = a["sweeps"]
        horizon = f"{a['trials']} trials × {a['epochs']} epochs, grace {a['asha']['grace_period']}, " \
                  f"rf {a['asha']['reduction_factor']:g}{_overridden(a, 'tune.seed')}"
        expected = _simulated(r, a)
        out.append((f"5. ASHA vs FIFO trial-epochs ({a['searcher']}, {horizon}, synthetic)",
                    f"{s['asha']['trial_epochs']} vs {s['fifo']['trial_epochs']} ({100 * a['epoch_fraction_asha_vs_fifo']:.0f} %)"
                    + (f"; simulated {expected}" if expected else ""),
                    "≤ 40 %", _ok(a["epoch_fraction_asha_vs_fifo"] <= 0.4)))
        asha, fifo = (_best_final(s[scheduler], a["epochs"]) for scheduler in ("asha", "fifo"))
        noise = a["noise"]["stdev"]
        within = None if None in (asha, fifo, noise) else asha - fifo >= -2 * noise
        out.append((f"5. best val mAP, ASHA vs FIFO ({horizon})", f"{asha} vs {fifo} (seed noise σ {noise})",
                    "within noise", _ok(within)))
    for b in _variants(r, "asha_budget", only):
        for setting in dict.fromkeys(row["setting"] for row in b["simulated"]):
            runs = [row for row in b["simulated"] if row["setting"] == setting]
            first = runs[0]
            judged = next((row for row in runs if row["noise"] == 0), first)  # met: the noiseless expectation
            label = (f"{setting}: {first['trials']} trials × {first['epochs']} epochs, grace {first['grace_period']}, "
                     f"rf {first['reduction_factor']:g}, {first['max_concurrent']} at a time")
            cells = "; ".join(f"noise {row['noise']:g}: {_fraction(row)}, best trial finishes in "
                              f"{100 * row['best_runs_to_the_end']:.0f} %" for row in runs)
            out.append((f"5. ASHA ÷ FIFO trial-epochs, simulated ({label}; {first['sweeps']} sweeps)", cells,
                        "≤ 40 %", _ok(judged["fraction_of_fifo"]["mean"] <= 0.4)))
    for m in _variants(r, "memory", only):
        for row in m.get("models", []):
            cuda = f", CUDA peak {row['cuda_max_allocated_mb']:.0f} MB" if "cuda_max_allocated_mb" in row else ""
            out.append((f"6. peak RSS of one trial ({row['arch'].removeprefix('maskrcnn_')}, "
                        f"{m['image_size'][0]}/{m['image_size'][1]} px, batch {m['batch_size']}"
                        f"{', AMP' if row.get('amp') else ''}{_on(m)})",
                        f"{row['peak_rss_mb'] / 1024:.2f} GB{cuda}", "—", "—"))
        if "reused_actor" in m:
            actor, peaks = m["reused_actor"], [row["peak_mb"] for row in m["reused_actor"]["trials"]]
            batches = "/".join(str(b) for b in dict.fromkeys(row["batch_size"] for row in actor["trials"]))
            out.append((f"6. peak RSS of one reused actor over {len(peaks)} one-epoch trials "
                        f"({actor['arch'].removeprefix('maskrcnn_')}, {actor['train_images']} images, batch {batches})",
                        f"first trial {peaks[0] / 1024:.2f} GB, last {peaks[-1] / 1024:.2f} GB, "
                        f"highest {max(peaks) / 1024:.2f} GB", "—", "—"))
    for c in _variants(r, "checkpoint_storage", only):
        seconds = c["seconds"]
        out.append((f"7. checkpoint report to S3 (moto on 127.0.0.1) ÷ local hard-link ({c['checkpoint_mb']:g} MB light-model "
                    "state, save + persist)",
                    f"{_range(c['ratio_s3_vs_local_report'], '{:.1f}')}; S3 {seconds['s3_moto']['report_s']['median']:.2f} s, "
                    f"local {seconds['local_hardlink']['report_s']['median']:.2f} s", "—", "—"))
    for c in _variants(r, "cluster_sweep", only):
        out.append((f"7. sweep wall ÷ ideal, loopback cluster ({c['trials']} trials × {c['epochs']} epochs × "
                    f"{c['epoch_s']:g} s, {c['concurrency']} at a time on one worker node, {c['storage']})",
                    f"{c['ratio_wall_vs_ideal']:.2f}× ({c['stage_wall_s']:.1f} s vs {c['ideal_s']:.1f} s; with process "
                    f"start {c['ratio_process_vs_ideal']:.2f}×)", "≤ 1.1×", _ok(c["ratio_wall_vs_ideal"] <= 1.1)))
    for g in _variants(r, "gpu_packing", only):
        label = (f"{g['arch'].removeprefix('maskrcnn_')} at {g['image_size'][0]}/{g['image_size'][1]} px, "
                 f"{g['epochs']} epoch of {g['train_images']} images{_on(g)}")
        out.append((f"8. trials per hour by GPU share per trial ({label})",
                    "; ".join(f"{run['gpu_per_trial']:g} GPU: {run['trials_per_hour']:.0f}/h"
                              + (f" ({run['ratio_vs_whole_gpu']:.2f}×)" if run["ratio_vs_whole_gpu"] else "")
                              + f", GPU busy {run['gpu_busy_percent']} %, {run['out_of_memory']} out of memory"
                              for run in g["runs"]), "—", "—"))
    for c in _variants(r, "coco_indexing", only):
        check = c["image_check"]
        # Files from before the fetch stage wrote the index time the checks alone.
        timed = c.get("index_written_s", c["index_coco_s"])
        ratio = c.get("index_written_ratio_to_pycocotools", c["ratio_to_pycocotools"])
        what = "checked, indexed and data/index.json written" if "index_written_s" in c else "checked and indexed"
        out.append((f"10. COCO JSON {what}, no image opened ({c['images']:,} images, {c['instances']:,} "
                    f"instances, {c['json_bytes'] / 2**20:.0f} MiB)",
                    f"{timed['median']:.2f} s (n={len(timed['all'])}; the checks alone "
                    f"{c['index_coco_s']['median']:.2f} s); pycocotools COCO() {c['pycocotools_COCO_s']['median']:.2f} s, "
                    f"ratio {ratio:.2f}×; image-file check {check['workers_1_ms_per_image']:.2f} ms per image on 1 "
                    "thread", "≤ 10 s", _ok(timed["median"] <= 10)))
    for m in _variants(r, "cache_memory", only):
        for run in m["runs"]:
            out.append((f"11. data.cache per image, stated ÷ held ({_data(m)}, {run['images']} images at "
                        f"{run['min_size']}/{run['max_size']} px)",
                        f"{run['held_vs_estimate']:.4f}× (stated {run['estimate_mib_per_image']:.3f} MiB, "
                        f"tensors held "
                        f"{run['held_mib_per_image']:.3f} MiB; resident set grew {run['rss_growth_mib_per_image']:.3f} "
                        f"MiB, {run['rss_growth_vs_estimate']:.2f}×)", "—", "—"))
    for o in _variants(r, "original_size_scoring", only):
        for part in ("oracle", "model"):
            if part not in o:
                continue
            what = ("the resized ground truth as detections, perfect at the model's scale" if part == "oracle" else
                    f"a light model trained {o['model']['epochs']} epochs from random weights"
                    f"{_overridden(o, 'train.lr')}{_overridden(o, 'train.batch_size')}")
            old, new = o[part]["old"], o[part]["new"]
            out.append((f"{SCORING_ROWS}COCO AP at the original size vs at the model's input, same predictions "
                        f"({what}; {_data(o)}, {o['val_images']} val images at {o['min_size']}/{o['max_size']} px)",
                        "; ".join(f"{metric} {old[metric]:.4f} → {new[metric]:.4f} ({new[metric] - old[metric]:+.4f})"
                                  for metric in ("bbox_mAP", "bbox_AP50", "segm_mAP", "segm_AP50")), "—", "—"))
    for c in _variants(r, "coco_smoke", only):
        stages = ", ".join(f"{stage} stage {seconds:.0f} s" for stage, seconds in c["stage_wall_s"].items() if seconds)
        out.append((f"13. the whole study on a generated COCO dataset, dvc exp run on the {c['profile']} profile "
                    f"({c['images']} images at {c['image_size'][0]}×{c['image_size'][1]} px, {len(c['categories'])} "
                    "categories, fetch to evaluate)",
                    f"{c['wall_s']:.0f} s ({stages}); the report's per-category AP: "
                    f"{len(c['categories_in_report'])} of {len(c['categories'])} categories", "—", "—"))
    for p in _variants(r, "epoch_profile", only):
        for run in p["runs"]:
            out.extend(_epoch_rows(p, run))
    for p in _variants(r, "predict", only):
        for run in p["runs"]:
            ratio, rate, cpu = run["ratio_project_vs_bare"], run["images_per_s"], run.get("ratio_project_vs_bare_cpu")
            out.append((f"14. pedtune predict ÷ bare torchvision loop ({run['arch'].removeprefix('maskrcnn_')}, "
                        f"{run['min_size']}/{run['max_size']} px, {run['images']} images, batch {run['batch_size']}, "
                        f"box score threshold {run['box_score_thresh']:g}{_on(p)})",
                        f"{_range(ratio)}" + (f"; CPU time {_range(cpu)}" if cpu else "")
                        + f"; bare {rate['bare']['median']:.2f} img/s, project "
                        f"{rate['project']['median']:.2f} img/s; {run['detections']['project']} detections; "
                        f"load average {p['machine']['loadavg_at_start']:.1f} at start, {p['loadavg_at_end']:.1f} at end",
                        # Judged by the CPU time where measured: the work, which load from other processes scatters less.
                        "≥ 0.95×" + (" (CPU time)" if cpu else ""), _ok((cpu or ratio)["median"] >= 0.95)))
    for g in _variants(r, "registry", only):
        for run in g["runs"]:
            bound = run["evaluate_training_bound"]
            share = run["registry_share_of_evaluate_upper_bound"]
            out.append((f"15. registry step ÷ evaluate stage, upper bound ({run['arch'].removeprefix('maskrcnn_')}, "
                        f"{run['min_size']}/{run['max_size']} px, the stage's {bound['runs']} runs × {bound['epochs']} "
                        f"epochs × {bound['train_images']} images{_on(g)})",
                        f"≤ {100 * share:.2f} % (registry {run['registry_first_s']:.1f} s, again "
                        f"{run['registry_again_s']['median']:.1f} s; the runs' training steps alone "
                        f"{bound['seconds']:.0f} s at {run['train_images_per_s']['median']:.3f} img/s; logged model "
                        f"{run['logged_model_bytes'] / 1e6:.1f} MB); load average {g['machine']['loadavg_at_start']:.1f} "
                        f"at start, {g['loadavg_at_end']:.1f} at end", "≤ 5 %", _ok(share <= 0.05)))
    return out


def _epoch_rows(result: dict[str, Any], run: dict[str, Any]) -> list[tuple[str, str, str, str]]:
    """An epoch_profile run: the last epoch not profiled (else the last), with the first epoch's warm-up
    beside it; and the profiled epoch's busiest ops."""
    profiled = (run["profile"] or {}).get("epoch")
    epochs = run["epochs"]
    shown = next((e for e in reversed(epochs) if e["epoch"] != profiled), epochs[-1])
    label = (f"{run['arch'].removeprefix('maskrcnn_')} at {run['image_size'][0]}/{run['image_size'][1]} px, "
             f"{run['train_images']} train / {run['val_images']} val images, batch {run['batch_size']}, {run['precision']}, "
             f"hooks: {', '.join(run['hooks']) or 'none'}{_on(result)}")
    tag = f"epoch {shown['epoch']} of {len(epochs)}{', under torch.profiler' if shown['epoch'] == profiled else ''}"
    first = epochs[0]
    warm_up = "; " if shown is first else f"; epoch 1 {first['wall_s']:.1f} s, "
    warm_up += (f"{first['first_shape_steps']} of its steps on new batch shapes {first['first_shape_steps_s']:.1f} s, "
                f"setup before it {first['setup_s']:.1f} s")
    met = shown["epoch_vs_step"] >= 0.8 and shown["eval_share"] <= 0.05
    rows = [(f"9. one epoch of fit, the steps' share of its wall ({label})",
             f"{shown['epoch_vs_step']:.2f}× ({tag}: {shown['wall_s']:.1f} s = steps {shown['steps_s']:.1f} + data wait "
             f"{shown['data_wait_s']:.1f} + val {shown['eval_s']:.1f} ({100 * shown['eval_share']:.1f} %) + hooks "
             f"{shown['checkpoint_start_s'] + shown['epoch_end_s']:.1f}; step {shown['step_images_per_s']:.2f} img/s, "
             f"epoch {shown['epoch_images_per_s']:.2f} img/s){warm_up}", "≥ 0.8×, val ≤ 5 %", _ok(met))]
    if profiled:
        profile = run["profile"]
        ranking = "top_ops_by_self_device_time" if "top_ops_by_self_device_time" in profile else "top_ops_by_self_cpu_time"
        seconds = "self_device_s" if ranking.endswith("device_time") else "self_cpu_s"
        busy = f"device busy {100 * profile['device_busy_share']:.0f} %; " if "device_busy_share" in profile else ""
        tops = ", ".join(f"{op['name']} {op[seconds]:.2f} s" for op in profile[ranking][:3])
        rows.append((f"9. profiled epoch {profiled} of {len(epochs)}, {ranking.removeprefix('top_ops_').replace('_', ' ')} "
                     f"({label})", f"{busy}{tops} (of {profile['wall_s']:.1f} s)", "—", "—"))
    return rows


def _best_final(sweep: dict[str, Any], epochs: int) -> float | None:
    """The sweep's best final score as the tune stage now picks it: among trials that ran all
    ``epochs``. Recomputed from the per-trial finals, since result files written before that rule
    hold a ``best_final`` that may be a trial ASHA stopped (judged at a rung, not at the end)."""
    finished = [final for final, ran in zip(sweep["finals"], sweep["epochs"]) if ran == epochs and math.isfinite(final)]
    return max(finished) if finished else sweep["best_final"]


def _fraction(row: dict[str, Any]) -> str:
    f = row["fraction_of_fifo"]
    return f"{100 * f['mean']:.1f} ± {100 * f['stdev']:.1f} % (p10–p90 {100 * f['p10']:.0f}–{100 * f['p90']:.0f} %)"


def _simulated(r: dict[str, dict[str, Any]], savings: dict[str, Any]) -> str | None:
    """What asha_budget's simulation expects (no noise) at the settings of an asha_savings run, if it ran them."""
    settings = (savings["trials"], savings["epochs"], savings["asha"]["grace_period"],
                savings["asha"]["reduction_factor"], int(savings["args"]["concurrency"]))
    for b in _variants(r, "asha_budget"):
        for row in b["simulated"]:
            # asha_savings runs with max_t = epochs (the trial's length).
            if row["noise"] == 0 and row["max_t"] == row["epochs"] and settings == (
                    row["trials"], row["epochs"], row["grace_period"], row["reduction_factor"], row["max_concurrent"]):
                return _fraction(row)
    return None


def _data(result: dict[str, Any]) -> str:
    return "synthetic" if result.get("data") == "synthetic" else "PennFudanPed"


def _on(result: dict[str, Any]) -> str:
    """``, on <GPU>`` for a result measured on CUDA (the header names each machine)."""
    return f", on {result['machine'].get('gpu', 'CUDA')}" if result["machine"]["device"] == "cuda" else ""


def _overridden(result: dict[str, Any], key: str) -> str:
    """``, key=value`` when the run changed ``key`` with ``--set``."""
    # emit() records each argument as str(value): a list's repr here.
    sets = ast.literal_eval(result.get("args", {}).get("overrides", "[]"))
    return "".join(f", {a}" for a in sets if a.startswith(f"{key}="))


def _is_result_of(stem: str, name: str) -> bool:
    """``<name>.json`` or ``<name>_<variant>.json`` (the same script with other arguments)."""
    return stem == name or stem.startswith(f"{name}_")


def _variants(r: dict[str, dict[str, Any]], name: str, only: str | None = None) -> list[dict[str, Any]]:
    return [r[stem] for stem in sorted(r) if _is_result_of(stem, name) and only in (None, stem)]


def measured_at(path: Path, result: dict[str, Any]) -> tuple[float, str]:
    """When a result was measured: its ``measured_at`` field (UTC seconds, written by
    ``common.emit``), not a git or file time, so a ``git archive`` export gives the same table;
    the file name breaks ties (a ``_variant`` re-run sorts after its base)."""
    if "measured_at" not in result:
        raise SystemExit(f"{path}: no measured_at field; every result file names when it was measured")
    return float(result["measured_at"]), path.stem


def latest_rows(r: dict[str, dict[str, Any]], order: dict[str, tuple[float, str]]) -> list[tuple[str, str, str, str]]:
    """``rows(r)``, one per measurement: a row measured again (in a later file, or later in the same
    file) gives way to the latest, shown where the measurement first appears."""
    kept: dict[str, tuple[str, str, str, str]] = {}
    for stem in sorted(r, key=order.__getitem__):
        for row in rows(r, only=stem):
            kept[row[0]] = row
    return list({row[0]: kept[row[0]] for row in rows(r)}.values())


def table(results: Path, prefix: str = "") -> str:
    """The markdown table of the result files in ``results`` (only the rows starting with ``prefix``)."""
    paths = {p.stem: p for p in sorted(results.glob("*.json")) if any(_is_result_of(p.stem, n) for n in BENCHMARKS)}
    r = {stem: json.loads(path.read_text()) for stem, path in paths.items()}
    if not r:
        return "no results yet"
    order = {stem: measured_at(path, r[stem]) for stem, path in paths.items()}
    machines: dict[tuple, list[str]] = {}
    for key, value in r.items():
        m = value["machine"]
        machines.setdefault((m["cpu"], m["cores"], m["torch"], m["device"], m.get("gpu")), []).append(key)
    head = "".join(f"- {cpu}, {cores} cores, torch {version}, device {device}{f' ({gpu})' if gpu else ''}: "
                   f"{', '.join(names)}\n" for (cpu, cores, version, device, gpu), names in machines.items())
    lines = ["| measurement | result | target | met |", "| --- | --- | --- | --- |"]
    lines += [f"| {a} | {b} | {c} | {d} |" for a, b, c, d in latest_rows(r, order) if a.startswith(prefix)]
    if prefix:
        return "\n".join(lines) + "\n"
    return "Machines (result files):\n\n" + head + "\n" + "\n".join(lines) + "\n"


def replace_table(page: str, text: str, markers: tuple[str, str] = (TABLE_START, TABLE_END)) -> str:
    """``page`` with the text between its ``markers`` (the bench-table's by default) replaced by ``text``."""
    first, last = markers
    if page.count(first) != 1 or page.count(last) != 1 or page.index(last) < page.index(first):
        raise SystemExit(f"the page must hold {first} and then {last}, once each")
    start, end = page.index(first) + len(first), page.index(last)
    return f"{page[:start]}\n{text.strip()}\n{page[end:]}"


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--only", nargs="+", choices=BENCHMARKS, default=None, help="default: all (on the CPU, all but "
                   + ", ".join(GPU_ONLY) + ")")
    p.add_argument("--results", type=Path, default=RESULTS)
    p.add_argument("--wait-quiet", type=float, default=None, metavar="LOAD",
                   help="before each benchmark, wait (up to 45 min) for the 1-min load average to drop below LOAD")
    p.add_argument("--table-only", action="store_true", help="only regenerate the table from the result files")
    p.add_argument("--page", type=Path, default=PERFORMANCE_PAGE, help="the page whose bench-table block is rewritten")
    p.add_argument("--data", default=None)
    p.add_argument("--synthetic", action="store_true", help="synthetic data for the benchmarks that read --data")
    p.add_argument("--device", choices=("cpu", "cuda"), default=None)
    p.add_argument("--amp", choices=("off", "on", "both"), default=None)
    p.add_argument("--threads", default=None)
    args = p.parse_args(argv)
    if args.only is None:
        args.only = [name for name in BENCHMARKS
                     if (args.device == "cuda" or name not in GPU_ONLY) and name not in ON_REQUEST]
    args.results.mkdir(parents=True, exist_ok=True)
    if not args.table_only:
        shared = [x for flag in SHARED if (v := getattr(args, flag[2:])) is not None for x in (flag, str(v))]
        for name in args.only:
            if args.wait_quiet:
                wait_quiet(args.wait_quiet)
            extra = shared + (["--synthetic"] if args.synthetic and name != "asha_savings" else [])
            if name == "asha_savings":
                extra = [x for i, x in enumerate(extra) if x != "--data" and (i == 0 or extra[i - 1] != "--data")]
            run(name, [] if name in OWN_DATA else extra, args.results)
    text = table(args.results)
    args.page.write_text(replace_table(args.page.read_text(encoding="utf-8"), text), encoding="utf-8")
    if args.page == PERFORMANCE_PAGE:
        methodology = METHODOLOGY_PAGE.read_text(encoding="utf-8")
        scoring = table(args.results, SCORING_ROWS)
        METHODOLOGY_PAGE.write_text(replace_table(methodology, scoring, (SCORING_START, SCORING_END)), encoding="utf-8")
    print(text)


if __name__ == "__main__":
    main()
