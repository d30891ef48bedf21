"""Keep freed memory in the process instead of handing it back to the OS (glibc on Linux).

PyTorch on CPU allocates through malloc. glibc serves blocks above a threshold (128 KiB, raised
as they are freed, up to 32 MiB) with fresh mmaps and trims the heap top back to the OS, so a
model that allocates the same tensors every step pays a page fault per 4 KiB page, every step,
in the kernel. Measured here (mamba's forward, B=8, T=1024, 2 layers, 8 forwards, two runs):
11,300-13,000 page faults and 19-29 ms of system time per forward, median 107-109 ms; with freed
memory kept, 4,700-5,300 faults, 7-9 ms, median 96 ms (the spread shrinks with it). Preloading
jemalloc or tcmalloc buys the same; this needs neither. Process-wide, so it is called by the
commands that train, evaluate and reproduce and by the model benchmark, never on import of the models
(they load as remote code into other people's processes).
"""
from __future__ import annotations

import ctypes
import ctypes.util

# mallopt parameters (malloc.h)
M_TRIM_THRESHOLD, M_TOP_PAD, M_MMAP_THRESHOLD = -1, -2, -3
MiB = 2**20


def keep_freed_memory(mmap_threshold: int = 1024 * MiB, trim_threshold: int = 4096 * MiB,
                      top_pad: int = 64 * MiB) -> bool:
    """Blocks below `mmap_threshold` come from the heap, freed heap memory is kept up to
    `trim_threshold`, and the heap grows `top_pad` at a time. The price: the process holds on to
    its high-water mark of memory. Returns False where there is no glibc mallopt (nothing changed)."""
    name = ctypes.util.find_library("c")
    try:
        mallopt = getattr(ctypes.CDLL(name), "mallopt", None) if name else None
    except OSError:
        mallopt = None
    if mallopt is None:
        return False
    return all(mallopt(param, value) == 1 for param, value in
               ((M_MMAP_THRESHOLD, mmap_threshold), (M_TRIM_THRESHOLD, trim_threshold), (M_TOP_PAD, top_pad)))
