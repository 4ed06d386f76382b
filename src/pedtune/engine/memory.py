"""Hand the heap that earlier trainings in this process freed back to the operating system.

One process often trains several configurations in a row: a reused Ray Tune actor runs one
trial after another, a Ray worker runs several evaluate runs. Detection models allocate
tensors of many sizes (proposals, masks, images of varying shapes), and glibc keeps the
freed chunks in its arenas instead of returning them, so without this such a process grows
by about the previous training's high-water mark each time. On a GPU, torch's caching allocator
likewise keeps the blocks of the previous training reserved, out of reach of the GPU's other
processes (trials sharing it).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
from functools import cache

import torch


@cache
def _libc() -> ctypes.CDLL | None:
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        libc = ctypes.CDLL(name)
    except OSError:
        return None
    # glibc only: musl's and macOS's libc have no malloc_trim.
    return libc if hasattr(libc, "malloc_trim") else None


def release_freed_heap() -> bool:
    """Collect garbage, return cached GPU blocks to the driver and free heap pages to the OS;
    False where libc cannot (not glibc)."""
    gc.collect()
    torch.cuda.empty_cache()  # a no-op in a process that never used CUDA
    libc = _libc()
    if libc is None:
        return False
    libc.malloc_trim(0)
    return True
