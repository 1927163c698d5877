"""One thread count for both compute pools of a qrec process: torch's and numba's (the compiled retrieval loops).

numba's OpenMP threading layer sets the calling thread's OpenMP thread count to numba's own at every parallel
launch, and torch reads its intra-op count from the same OpenMP runtime: left apart, a process told to use one
thread ran torch on every core after its first compiled top-k (measured: `--threads 1` became 2 after one
evaluation, and a shared machine's other jobs then made torch's ops up to 20x slower)."""

from __future__ import annotations

import torch

__all__ = ["set_threads"]


def set_threads(n: int) -> None:
    """Use ``n`` threads in torch and in numba's kernels launched from the calling thread (numba's count is per
    thread: a server's worker calls this itself)."""
    import numba

    torch.set_num_threads(n)
    numba.set_num_threads(max(1, min(n, numba.config.NUMBA_NUM_THREADS)))
