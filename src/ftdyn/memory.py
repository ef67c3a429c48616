"""Giving freed memory back to the operating system between the phases of a job.

glibc's malloc keeps freed heap memory for reuse. After evaluating a 1B model, the heap is strewn
with freed blocks of sizes the training step does not ask for, so training allocates anew while
the process still holds them: resident memory adds the two phases instead of taking the larger
(OLMo-1B's shape, LoRA: 11.0 GiB peak; with `release` between phases, see docs/real-models.md).
`release` collects Python's garbage, then asks glibc to return its free pages (`malloc_trim`).
Elsewhere (another libc, another OS) only the garbage collection happens.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import gc


@functools.cache
def _malloc_trim():
    """glibc's `malloc_trim`, or None where the C library has none."""
    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim
    except (OSError, AttributeError):
        return None


def release() -> None:
    """Free unreachable objects and give the heap's free memory back to the operating system."""
    gc.collect()
    trim = _malloc_trim()
    if trim is not None:
        trim(0)
