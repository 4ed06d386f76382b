"""What pedtune prints: one prefix (``pedtune <stage>: ...``), progress with an ETA, stage summaries.

Everything goes through Python's logging, under the ``pedtune`` logger, to stderr. The CLI
calls :func:`configure` with the stage it runs and ``--quiet``; quiet is the logger's level
(:data:`SUMMARY`: warnings, errors and each stage's closing summary pass, progress does not).
Progress draws a tqdm bar when stderr is a terminal and writes a plain line every
``interval_s`` seconds otherwise (DVC's queued experiments, CI, Ray workers' log files), so
logs hold no carriage returns or escape codes.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar

from tqdm import tqdm

from pedtune.units import duration

ROOT = "pedtune"
SUMMARY = 25  # between INFO and WARNING: what --quiet still shows
logging.addLevelName(SUMMARY, "SUMMARY")
T = TypeVar("T")
PLAIN_INTERVAL_S = 20.0  # between two progress lines when stderr is not a terminal
RAY_COLOR_PREFIX = "RAY_COLOR_PREFIX"  # Ray 2.60: "0" prints worker-line prefixes without colour codes


class _Formatter(logging.Formatter):
    """``pedtune <stage>: [warning: ]message``, the prefix repeated on every line of the message."""

    def __init__(self, stage: str | None) -> None:
        super().__init__()
        self.prefix = f"{ROOT} {stage}: " if stage else f"{ROOT}: "

    def format(self, record: logging.LogRecord) -> str:
        message = record.getMessage()
        if record.levelno >= logging.ERROR:
            message = f"error: {message}"
        elif record.levelno >= logging.WARNING:
            message = f"warning: {message}"
        if record.exc_info:
            message = f"{message}\n{self.formatException(record.exc_info)}"
        return "\n".join(self.prefix + line for line in message.splitlines() or [""])


class _Handler(logging.Handler):
    """Writes through tqdm, so a message printed under a live bar does not tear it; to the
    ``sys.stderr`` of the moment (test captures replace it)."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            tqdm.write(self.format(record), file=sys.stderr)
            sys.stderr.flush()
        except Exception:  # logging's contract: a failed write never raises into the caller
            self.handleError(record)


def configure(stage: str | None = None, quiet: bool = False) -> None:
    """Send pedtune's messages to stderr as ``pedtune <stage>: ...``; ``quiet`` keeps only
    warnings, errors and summaries. Replaces an earlier configuration (a reused Ray worker)."""
    logger = logging.getLogger(ROOT)
    for handler in [h for h in logger.handlers if isinstance(h, _Handler)]:
        logger.removeHandler(handler)
    handler = _Handler()
    handler.setFormatter(_Formatter(stage))
    logger.addHandler(handler)
    logger.setLevel(SUMMARY if quiet else logging.INFO)
    logger.propagate = False  # Ray and MLflow configure the root logger; print once
    if quiet:
        logging.getLogger("mlflow").setLevel(logging.WARNING)  # its notes on creating a store's tables


def get(name: str) -> logging.Logger:
    """The logger of a module (``__name__``); a process that never called :func:`configure`
    (a test, a Ray worker) prints as ``pedtune: ...``."""
    root = logging.getLogger(ROOT)
    if not any(isinstance(h, _Handler) for h in root.handlers):
        configure(None)
    return logging.getLogger(name)


def _prefix() -> str:
    """``pedtune <stage>: `` as :func:`configure` set it."""
    for handler in logging.getLogger(ROOT).handlers:
        if isinstance(handler, _Handler) and isinstance(handler.formatter, _Formatter):
            return handler.formatter.prefix
    return f"{ROOT}: "


def quiet() -> bool:
    return not get(ROOT).isEnabledFor(logging.INFO)


def is_terminal() -> bool:
    """Whether stderr is a terminal a bar can be drawn on (a pseudo-terminal of no width cannot)."""
    try:
        return sys.stderr.isatty() and os.get_terminal_size(sys.stderr.fileno()).columns > 0
    except (OSError, ValueError, AttributeError):  # no file descriptor (a test capture), closed
        return False


@contextmanager
def plain_ray_prefixes() -> Iterator[None]:
    """While the block runs, Ray prints the ``(pid=…)`` prefix of the worker lines it forwards
    without colour codes unless stdout and stderr are both terminals (a log file, CI and DVC's
    captured output get plain text). Ray reads ``RAY_COLOR_PREFIX`` at every line; it is restored after."""
    if sys.stdout.isatty() and is_terminal():
        yield
        return
    before = os.environ.get(RAY_COLOR_PREFIX)
    os.environ[RAY_COLOR_PREFIX] = "0"
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(RAY_COLOR_PREFIX, None)
        else:
            os.environ[RAY_COLOR_PREFIX] = before


class Progress:
    """Steps of one phase (an epoch's training, a val pass), shown as a bar or as plain lines.

    Iterate over :meth:`wrap` of the loop's iterable: each item taken counts the step before
    it as done. :meth:`show` sets values to show with the count (``loss=0.51``).
    """

    def __init__(
        self,
        total: int,
        label: str,
        logger: logging.Logger,
        unit: str = "step",
        interval_s: float = PLAIN_INTERVAL_S,
        terminal: bool | None = None,
    ) -> None:
        self.total, self.label, self.unit, self.interval_s = total, label, unit, interval_s
        self._log = logger
        self.done = 0
        self._start = self._last_line = time.perf_counter()
        self._values: dict[str, float] = {}
        enabled = logger.isEnabledFor(logging.INFO)
        terminal = is_terminal() if terminal is None else terminal
        self._plain = enabled and not terminal
        self._bar: tqdm | None = None
        if enabled and terminal:
            self._bar = tqdm(total=total, desc=f"{_prefix()}{label}", unit=unit, file=sys.stderr, leave=False,
                             dynamic_ncols=True)

    def wrap(self, items: Iterable[T]) -> Iterator[T]:
        """``items``, counting a step each time the next one is asked for (and at the end)."""
        try:
            for index, item in enumerate(items):
                if index:
                    self.update()
                yield item
            self.update()
        finally:
            self.close()

    def show(self, **values: float) -> None:
        self._values.update(values)

    def update(self, n: int = 1) -> None:
        self.done += n
        if self._bar is not None:
            if self._values:
                self._bar.set_postfix({k: f"{v:.3g}" for k, v in self._values.items()}, refresh=False)
            self._bar.update(n)
            return
        now = time.perf_counter()
        if self._plain and now - self._last_line >= self.interval_s and self.done < self.total:
            self._last_line = now
            self._log.info(self.line(now - self._start))

    def line(self, elapsed_s: float) -> str:
        """``epoch 2/10 train: step 40/119 (34 %), 1.52 step/s, ETA 52 s, loss 0.512, lr 0.005``."""
        rate = self.done / elapsed_s if elapsed_s > 0 else 0.0
        eta = duration((self.total - self.done) / rate) if rate > 0 else "unknown"
        pct = 100 * self.done / self.total if self.total else 100.0
        parts = [f"{self.label}: {self.unit} {self.done}/{self.total} ({pct:.0f} %)", f"{rate:.2f} {self.unit}/s",
                 f"ETA {eta}", *(f"{k} {v:.4g}" for k, v in self._values.items())]
        return ", ".join(parts)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None


def summary(logger: logging.Logger, headline: str, wrote: Sequence[str | Path] = (),
            look: Iterable[str] = ()) -> None:
    """A stage's closing lines: what it found, the files it wrote, the commands to look at them."""
    lines = [headline]
    if wrote:
        lines.append("wrote " + ", ".join(str(path) for path in wrote))
    lines.extend(f"see: {command}" for command in look)
    logger.log(SUMMARY, "\n".join(lines))


def mlflow_ui_command(tracking_uri: str) -> str:
    """The command that shows the store's runs (a server's URI is its own UI)."""
    if tracking_uri.startswith(("http://", "https://")):
        return f"open {tracking_uri} (the MLflow server's UI)"
    return f"mlflow ui --backend-store-uri {tracking_uri} --host 127.0.0.1"


def views(tracking_uri: str, run_id: str) -> list[str]:
    """Where a stage's metrics, plots and MLflow run are looked at."""
    return ["dvc metrics show", "dvc plots show (writes dvc_plots/index.html)",
            f"{mlflow_ui_command(tracking_uri)} (run {run_id})"]
