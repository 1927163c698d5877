"""Micro-batching: requests that arrive while the scorer is busy are scored together in its next call.

There is no timer: an idle server scores a lone request at once (no added latency), a busy one scores
everything that queued during the previous call in one batch (one table scan or popcount pass for many
users instead of one per user). Scoring runs on one worker thread, so the event loop keeps accepting
requests meanwhile (torch and the numba kernels release the GIL).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor


class MicroBatcher:
    """``await submit(job)`` -> ``run(jobs)[i]`` of the batch the job landed in; ``size(job)`` counts its users."""

    def __init__(self, run: Callable[[Sequence], list], size: Callable[[object], int], max_batch: int = 256,
                 initializer: Callable[[], None] | None = None):
        self._run, self._size, self._max = run, size, max(1, int(max_batch))
        self._queue: asyncio.Queue | None = None
        self._task: asyncio.Task | None = None
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="qrec-score", initializer=initializer)
        self.batches = self.jobs = 0  # counters, for /metadata and tests

    async def start(self) -> None:
        self._queue = asyncio.Queue()
        self._task = asyncio.create_task(self._loop())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
        self._pool.shutdown(wait=True)

    async def submit(self, job):
        future = asyncio.get_running_loop().create_future()
        self._queue.put_nowait((job, future))
        return await future

    async def call(self, fn, *args):
        """``fn(*args)`` on the scoring thread, after the batch in progress (not batched itself)."""
        return await asyncio.get_running_loop().run_in_executor(self._pool, fn, *args)

    async def _loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = [await self._queue.get()]
            users = self._size(batch[0][0])
            while not self._queue.empty() and users < self._max:
                batch.append(self._queue.get_nowait())
                users += self._size(batch[-1][0])
            live = [(job, fut) for job, fut in batch if not fut.done()]  # a client that went away is skipped
            if not live:
                continue
            try:
                results = await loop.run_in_executor(self._pool, self._run, [job for job, _ in live])
            except Exception as e:  # noqa: BLE001 - handed to every waiting request, the loop goes on
                for _, fut in live:
                    if not fut.done():
                        fut.set_exception(e)
                continue
            self.batches += 1
            self.jobs += len(live)
            for (_, fut), result in zip(live, results):
                if not fut.done():
                    fut.set_result(result)
