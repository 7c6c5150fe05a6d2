"""Adaptive batching for a model replica: concurrent `/v1/predict` requests share one `predict_batch` call.

Why: a model whose cost is mostly per call (a Python hop, a thread hop, a vectorised library call) serves
many more requests per second when N requests become one call of N rows, as BentoML's and Triton's dynamic
batchers do. It is opt-in (`model.json` `"batching": {"max_batch_size": 16, "max_wait_ms": 2}`), because it
trades a little latency at low load for throughput at high load.

How it adapts: one dispatcher takes the first waiting request, then gathers more for at most `max_wait_ms`
(or until `max_batch_size`) and runs the batch; while a batch runs, new requests queue, so under load the next
batch is bigger without waiting at all. Each caller gets its own result, in order; if the batch call fails,
every caller of that batch gets the failure.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from typing import Any

RunBatch = Callable[[list[dict[str, Any]]], Awaitable[list[Any]]]


class Batcher:
    """Queue of pending predictions and the task that turns them into batch calls."""

    def __init__(
        self,
        run_batch: RunBatch,
        *,
        max_batch_size: int,
        max_wait_ms: float,
        on_batch: Callable[[int], None] | None = None,
    ) -> None:
        self.run_batch = run_batch
        self.max_batch_size = max_batch_size
        self.max_wait = max_wait_ms / 1000.0
        self.on_batch = on_batch
        self._queue: asyncio.Queue[tuple[dict[str, Any], asyncio.Future[Any]]] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None

    async def submit(self, inputs: dict[str, Any]) -> Any:
        """The model's outputs for `inputs`, computed in some batch."""
        if self._task is None:
            self._task = asyncio.create_task(self._dispatch(), name="predict-batcher")
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        await self._queue.put((inputs, future))
        return await future

    async def _gather(self) -> list[tuple[dict[str, Any], asyncio.Future[Any]]]:
        batch = [await self._queue.get()]
        deadline = time.monotonic() + self.max_wait
        while len(batch) < self.max_batch_size:
            if not self._queue.empty():
                batch.append(self._queue.get_nowait())
                continue
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            try:
                batch.append(await asyncio.wait_for(self._queue.get(), remaining))
            except TimeoutError:
                break
        return batch

    async def _dispatch(self) -> None:
        while True:
            batch = await self._gather()
            live = [(inputs, future) for inputs, future in batch if not future.done()]  # callers gone: skip
            if not live:
                continue
            if self.on_batch is not None:
                self.on_batch(len(live))
            try:
                outputs = await self.run_batch([inputs for inputs, _ in live])
                if len(outputs) != len(live):
                    raise RuntimeError(f"predict_batch returned {len(outputs)} results for {len(live)} inputs")
            except Exception as exc:  # noqa: BLE001 - every caller of this batch gets the failure
                for _, future in live:
                    if not future.done():
                        future.set_exception(exc)
                continue
            for (_, future), result in zip(live, outputs, strict=True):
                if not future.done():
                    future.set_result(result)

    async def aclose(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
