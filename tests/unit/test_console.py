"""The console: one prefix, progress as plain lines without a terminal, quiet, summaries, --version."""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Iterator

import pytest

from pedtune import console
from pedtune.cli import main
from pedtune.units import duration

CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")  # anything but newline and tab: \r, ANSI escapes


@pytest.fixture(autouse=True)
def default_console() -> Iterator[None]:
    yield
    console.configure(None)  # what another test's process would start with


def test_messages_carry_one_prefix_on_every_line(capsys):
    console.configure("train")
    log = console.get("pedtune.somewhere")
    log.info("first\nsecond")
    log.warning("careful")
    log.error("broken")
    assert capsys.readouterr().err.splitlines() == [
        "pedtune train: first", "pedtune train: second", "pedtune train: warning: careful",
        "pedtune train: error: broken",
    ]


def test_progress_without_a_terminal_writes_plain_lines_with_rate_and_eta(capsys):
    console.configure("train")
    progress = console.Progress(4, "epoch 1/2 train", console.get("pedtune.test"), interval_s=0.0, terminal=False)
    for step in progress.wrap(range(4)):
        progress.show(loss=1.0 / (step + 1))
    err = capsys.readouterr().err
    lines = err.splitlines()
    # A line per step but the last (the epoch's own line follows it), every one whole.
    assert [line.split(",")[0] for line in lines] == [
        f"pedtune train: epoch 1/2 train: step {k}/4 ({25 * k} %)" for k in (1, 2, 3)
    ]
    assert all(" step/s, ETA " in line for line in lines)
    assert "loss 0.3333" in lines[-1]
    assert not CONTROL.search(err)


def test_progress_lines_come_at_most_once_per_interval(capsys):
    console.configure("tune")
    progress = console.Progress(50, "val", console.get("pedtune.test"), unit="img", interval_s=3600.0,
                                terminal=False)
    for _ in progress.wrap(range(50)):
        pass
    assert capsys.readouterr().err == ""


def test_quiet_shows_no_progress_not_even_on_a_terminal_but_warnings_and_summaries(capsys):
    console.configure("train", quiet=True)
    log = console.get("pedtune.test")
    progress = console.Progress(3, "epoch 1/1 train", log, interval_s=0.0, terminal=True)
    for _ in progress.wrap(range(3)):
        log.info("an epoch line")
    log.warning("a warning")
    console.summary(log, "val bbox_mAP 0.5", wrote=["metrics/train.json"])
    assert console.quiet()
    assert capsys.readouterr().err.splitlines() == [
        "pedtune train: warning: a warning", "pedtune train: val bbox_mAP 0.5",
        "pedtune train: wrote metrics/train.json",
    ]


def test_a_terminal_gets_a_bar_that_leaves_no_line_behind(capsys):
    console.configure("train")
    progress = console.Progress(3, "epoch 1/1 train", console.get("pedtune.test"), terminal=True)
    for _ in progress.wrap(range(3)):
        progress.show(loss=0.5)
    err = capsys.readouterr().err
    assert "pedtune train: epoch 1/1 train" in err and "\r" in err  # tqdm's bar, redrawn in place
    assert "step/s, ETA" not in err  # and no plain lines


def test_summary_names_files_and_the_commands_to_look_at_them(capsys):
    console.configure("train")
    console.summary(console.get("pedtune.test"), "val bbox_mAP 0.6123", wrote=["models/model.pt", "metrics/train.json"],
                    look=console.views("sqlite:////repo/mlruns/mlflow.db", "abc123"))
    assert capsys.readouterr().err.splitlines() == [
        "pedtune train: val bbox_mAP 0.6123",
        "pedtune train: wrote models/model.pt, metrics/train.json",
        "pedtune train: see: dvc metrics show",
        "pedtune train: see: dvc plots show (writes dvc_plots/index.html)",
        "pedtune train: see: mlflow ui --backend-store-uri sqlite:////repo/mlruns/mlflow.db --host 127.0.0.1 "
        "(run abc123)",
    ]
    assert console.mlflow_ui_command("http://127.0.0.1:5000").startswith("open http://127.0.0.1:5000")


@pytest.mark.parametrize(("seconds", "shown"),
                         [(0.4, "0 s"), (42, "42 s"), (425, "7 min 05 s"), (12_000, "3 h 20 min")])
def test_durations_read_at_a_useful_precision(seconds, shown):
    assert duration(seconds) == shown


def test_version_comes_from_the_package_metadata(capsys):
    from importlib.metadata import version

    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])
    assert exit_info.value.code == 0
    assert capsys.readouterr().out == f"pedtune {version('pedtune')}\n"


def test_quiet_is_accepted_before_and_after_the_stage():
    from pedtune.cli import build_parser

    parser = build_parser()
    assert parser.parse_args(["--quiet", "check"]).quiet
    assert parser.parse_args(["check", "-q"]).quiet
    assert not parser.parse_args(["check"]).quiet


def test_fit_reports_epochs_as_plain_lines_and_nothing_when_quiet(tiny_config, synthetic_store, capsys):
    from pedtune.engine.train import fit

    config = tiny_config.model_copy(update={"train": tiny_config.train.model_copy(update={"epochs": 1})})
    console.configure("train")
    fit(config, synthetic_store, synthetic_store)
    err = capsys.readouterr().err
    assert re.search(r"^pedtune train: epoch 1/1: loss [\d.]+, val bbox_mAP [\d.]+, segm_mAP [\d.]+, [\w ]+ "
                     r"\(val [\w ]+\)$", err, re.MULTILINE), err
    assert not CONTROL.search(err)
    console.configure("train", quiet=True)
    fit(config, synthetic_store, synthetic_store)
    assert capsys.readouterr().err == ""
    assert logging.getLogger("pedtune").level == console.SUMMARY


def test_ray_forwards_worker_lines_without_colour_codes_when_the_output_is_not_a_terminal(monkeypatch):
    import io

    from ray._private.worker import print_worker_logs

    monkeypatch.delenv(console.RAY_COLOR_PREFIX, raising=False)
    line = {"pid": 4242, "ip": "127.0.0.1", "localhost": "127.0.0.1", "lines": ["epoch 1 of 2"], "is_err": True}

    def printed() -> str:
        sink = io.StringIO()
        print_worker_logs(line, sink)
        return sink.getvalue()

    assert "\x1b[" in printed()  # Ray's own default: a coloured prefix
    with console.plain_ray_prefixes():  # pytest's captured stdout is not a terminal
        assert printed() == "(pid=4242) epoch 1 of 2\n"
    assert console.RAY_COLOR_PREFIX not in os.environ
