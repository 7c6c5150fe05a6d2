"""A bounded, thread-safe queue that sync threads and asyncio loops can both wait on.

Readings are produced on the SDK's I/O thread and consumed by app code (a plain thread or another event
loop). When the app is slower than its sensors the oldest items are dropped (the newest frame matters
most), and `dropped` counts them.
"""

# ruff: noqa: ASYNC109 - the async API names its deadline `timeout`, exactly like the sync API

from __future__ import annotations

import asyncio
import collections
import contextlib
import threading
import time
from typing import Any


class Mailbox:
    def __init__(self, maxlen: int = 1000) -> None:
        self._items: collections.deque[Any] = collections.deque()
        self.maxlen = maxlen
        self.dropped = 0
        self._cond = threading.Condition()
        self._async_waiters: list[tuple[asyncio.AbstractEventLoop, asyncio.Event]] = []

    def put(self, item: Any) -> None:
        with self._cond:
            if len(self._items) >= self.maxlen:
                self._items.popleft()
                self.dropped += 1
            self._items.append(item)
            self._cond.notify()
            waiters, self._async_waiters = self._async_waiters, []
        for loop, event in waiters:
            with contextlib.suppress(RuntimeError):  # that loop is closed
                loop.call_soon_threadsafe(event.set)

    def wake(self) -> None:
        """Wake every waiter without an item (used to stop a run loop)."""
        with self._cond:
            self._cond.notify_all()
            waiters, self._async_waiters = self._async_waiters, []
        for loop, event in waiters:
            with contextlib.suppress(RuntimeError):  # that loop is closed
                loop.call_soon_threadsafe(event.set)

    def get(self, timeout: float | None) -> tuple[bool, Any]:
        """(True, item) or (False, None) after `timeout` seconds (None: wait for ever)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while not self._items:
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return False, None
                self._cond.wait(remaining)
                if not self._items and deadline is None:
                    return False, None  # woken without an item
            return True, self._items.popleft()

    async def aget(self, timeout: float | None) -> tuple[bool, Any]:
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        while True:
            with self._cond:
                if self._items:
                    return True, self._items.popleft()
                event = asyncio.Event()
                self._async_waiters.append((loop, event))
            remaining = None if deadline is None else deadline - loop.time()
            if remaining is not None and remaining <= 0:
                return False, None
            try:
                await asyncio.wait_for(event.wait(), remaining)
            except TimeoutError:
                return False, None
