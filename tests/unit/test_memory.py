from __future__ import annotations

import ctypes
import ctypes.util
import sys

import psutil
import pytest

from pedtune.engine import memory

CHUNK = 4096  # below glibc's mmap threshold: served from the heap, kept there when freed
CHUNKS = 40_000  # about 160 MB


def _rss_mb() -> float:
    return psutil.Process().memory_info().rss / 2**20


@pytest.mark.skipif(not sys.platform.startswith("linux") or memory._libc() is None, reason="needs glibc")
def test_release_returns_freed_heap_that_glibc_keeps():
    libc = ctypes.CDLL(ctypes.util.find_library("c"))
    libc.malloc.restype = ctypes.c_void_p
    libc.free.argtypes = [ctypes.c_void_p]
    chunks = [libc.malloc(CHUNK) for _ in range(CHUNKS)]
    for chunk in chunks:
        ctypes.memset(chunk, 1, CHUNK)  # touch every page, so it counts in RSS
    pin = libc.malloc(CHUNK)  # above the freed chunks: glibc cannot shrink the heap past it
    for chunk in chunks:
        libc.free(chunk)
    held = _rss_mb()
    try:
        assert memory.release_freed_heap() is True
        assert held - _rss_mb() > 100  # of the ~160 MB freed but still resident
    finally:
        libc.free(pin)


def test_release_without_glibc_only_collects_garbage(monkeypatch):
    collections = []
    monkeypatch.setattr(memory.gc, "collect", lambda: collections.append(True))
    monkeypatch.setattr(memory, "_libc", lambda: None)
    assert memory.release_freed_heap() is False
    assert collections == [True]
