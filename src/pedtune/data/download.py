"""Download a file over HTTP(S) with a size check, a timeout and progress on long transfers."""

from __future__ import annotations

import os
import sys
import tempfile
import urllib.error
import urllib.request
from http.client import HTTPException
from pathlib import Path
from typing import BinaryIO, Protocol

from pedtune import console
from pedtune.errors import DataError

log = console.get(__name__)


CHUNK = 1 << 20
DOWNLOAD_TIMEOUT_S = 60.0
LOCAL_COPY_HINT = (
    "To use a local copy instead, download PennFudanPed.zip on a machine with internet access "
    "and set `data.source: zip` and `data.local_path: /path/to/PennFudanPed.zip` in params.yaml, "
    "or extract it and set `data.source: dir` with `data.local_path: /path/to/PennFudanPed`."
)


class _Progress(Protocol):
    def update(self, n: int) -> object: ...

    def close(self) -> None: ...


class _PlainProgress:
    """Without a terminal (logs, CI): a line every 10 %, or every 10 MiB if the size is unknown."""

    def __init__(self, total: int | None, desc: str) -> None:
        self.total, self.desc, self.done, self._next = total, desc, 0, 0

    def update(self, n: int) -> None:
        self.done += n
        step = self.total // 10 if self.total else 10 * CHUNK
        if self.done >= self._next:
            pct = f" ({100 * self.done / self.total:.0f}%)" if self.total else ""
            log.info(f"{self.desc}: {self.done / 2**20:.1f} MiB{pct}")
            self._next = self.done + max(step, 1)

    def close(self) -> None:
        pass


class _NoProgress:
    def update(self, n: int) -> None:
        pass

    def close(self) -> None:
        pass


def _progress_bar(total: int | None, desc: str, enabled: bool) -> _Progress:
    if not enabled or console.quiet():
        return _NoProgress()
    if not console.is_terminal():
        return _PlainProgress(total, desc)
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit="B", unit_scale=True, unit_divisor=1024, file=sys.stderr)


def download(url: str, dest: Path, expected_size: int | None, progress: bool = True) -> None:
    """Download ``url`` to ``dest`` via a temporary sibling file, so ``dest`` is never partial."""
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".part", dir=dest.parent)
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as out:
            received = _stream(url, out, expected_size, progress, desc=dest.name)
        if expected_size is not None and received != expected_size:
            raise DataError(
                f"download of {url} failed: got {received} bytes, expected {expected_size} "
                f"(connection cut short?). {LOCAL_COPY_HINT}"
            )
        os.replace(tmp, dest)
    except (urllib.error.URLError, HTTPException, OSError, ValueError) as exc:
        # URLError covers refused/unresolvable hosts and HTTP errors; OSError covers
        # timeouts and resets mid-transfer; ValueError an unusable URL.
        raise DataError(f"download of {url} failed: {_reason(exc)}. {LOCAL_COPY_HINT}") from exc
    finally:
        tmp.unlink(missing_ok=True)


def _stream(url: str, out: BinaryIO, expected_size: int | None, progress: bool, desc: str) -> int:
    received = 0
    with urllib.request.urlopen(url, timeout=DOWNLOAD_TIMEOUT_S) as response:
        length = response.headers.get("Content-Length")
        total = int(length) if length and length.isdigit() else expected_size
        bar = _progress_bar(total, desc, progress)
        try:
            while chunk := response.read(CHUNK):
                out.write(chunk)
                received += len(chunk)
                bar.update(len(chunk))
        finally:
            bar.close()
    return received


def _reason(exc: BaseException) -> str:
    if isinstance(exc, urllib.error.HTTPError):
        return f"HTTP {exc.code} {exc.reason}"
    if isinstance(exc, urllib.error.URLError):
        return str(exc.reason)
    return str(exc) or type(exc).__name__
