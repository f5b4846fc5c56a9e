"""Process-level memory settings for serving.

glibc gives each thread that allocates its own malloc arena, and torch's per-step tensors leave
each model worker thread's arena partly used and never returned. Serving has one worker thread
per model; capping glibc at one arena saves about 11 MB resident with the three bundled models,
at no measurable cost (the workers spend their time inside BLAS, not in malloc). And glibc keeps
the heap pages a burst of allocations freed: measuring a model's serving paths builds and drops
every candidate's weights, ~90 MB held after the three bundled models unless handed back.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os

log = logging.getLogger("genbot.engine")
_M_ARENA_MAX = -8  # from glibc's malloc.h


def _libc() -> ctypes.CDLL | None:
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        return ctypes.CDLL(name)
    except OSError:
        return None


def release_freed_memory() -> bool:
    """Hand the heap pages malloc keeps after frees back to the system (glibc); False elsewhere."""
    libc = _libc()
    try:
        return bool(libc.malloc_trim(0)) if libc is not None else False
    except AttributeError:  # not glibc
        return False


def limit_malloc_arenas(arenas: int = 1) -> bool:
    """Cap glibc's malloc arenas unless MALLOC_ARENA_MAX is set; False where it does not apply."""
    if "MALLOC_ARENA_MAX" in os.environ:
        return False  # the operator chose; glibc read it at start-up
    libc = _libc()
    if libc is None:
        return False
    try:
        return bool(libc.mallopt(_M_ARENA_MAX, arenas))
    except AttributeError:  # not glibc (musl, macOS): nothing to tune
        log.debug("mallopt is not available; malloc arenas left as they are")
        return False
