"""Keep large frame buffers off glibc's page-fault cliff.

glibc serves allocations above a dynamic threshold with mmap and gives freed memory back to the
system; with several 2-6 MB frames freed close together it does so repeatedly, and every later
fresh buffer then costs ~1,500 page faults (3-4 ms for 6 MB here). Raising the mmap threshold
above a frame and the trim threshold well above the working set keeps those buffers in the heap
for reuse. Both are needed: the trim threshold alone changes nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os

# mallopt parameters from glibc's malloc.h.
M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD_BYTES = 32 * 1024 * 1024  # above a 1080p rgb8 frame (6.2 MB) and a 4K one (24.9 MB)
TRIM_THRESHOLD_BYTES = 512 * 1024 * 1024
# Set to 0 to leave glibc's defaults (for measuring what this buys).
ENVIRONMENT_SWITCH = 'SEG_NODE_MALLOC_TUNING'


def keep_large_buffers() -> bool:
    """Apply the thresholds through mallopt; False where that is off, not glibc, or refused."""
    if os.environ.get(ENVIRONMENT_SWITCH, '1') == '0':
        return False
    name = ctypes.util.find_library('c')
    if not name:
        return False
    try:
        mallopt = ctypes.CDLL(name).mallopt
    except (OSError, AttributeError):  # musl and other C libraries have no mallopt
        return False
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    return bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES)) and bool(
        mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES))
