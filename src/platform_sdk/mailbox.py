"""A bounded, thread-safe queue that sync threads and asyncio loops can both wait on.

Readings are produced on the SDK's I/O thread and consumed by app code (a plain thread or another event
loop). Two delivery policies, chosen per sensor in app.json (`context.sensors.<alias>.delivery`):

- "every" (`put(item)`): every item is kept, in order. Beyond `maxlen` waiting items (or `max_bytes` of camera
  frames waiting) the oldest is dropped: the app is slower than its sensors for longer than the buffer lasts;
  `dropped` counts them (lost readings).
- "latest" (`put(item, key=...)`): while an item of the same key (one sensor device) still waits, the new one
  replaces it in its place; `coalesced` counts the replaced ones. Nothing is lost by this: the app asked for
  only the newest reading of each device (a camera frame, a level that is only acted on when it changes).
"""

# ruff: noqa: ASYNC109 - the async API names its deadline `timeout`, exactly like the sync API

from __future__ import annotations

import asyncio
import collections
import contextlib
import threading
import time
from typing import Any


class _Slot:
    """One waiting item; a "latest" slot has its item replaced while it waits."""

    __slots__ = ("item", "key", "size")

    def __init__(self, item: Any, key: Any) -> None:
        self.item, self.key, self.size = item, key, _size(item)


def _size(item: Any) -> int:
    """Bytes a waiting item holds beyond a small record: a camera frame's encoded image."""
    frame = getattr(item, "frame_bytes", None)
    return len(frame) if isinstance(frame, bytes | bytearray) else 0


class Mailbox:
    def __init__(self, maxlen: int = 1000, max_bytes: int | None = None) -> None:
        self._items: collections.deque[_Slot] = collections.deque()
        self._latest: dict[Any, _Slot] = {}
        self.maxlen = maxlen
        self.max_bytes = max_bytes
        self.bytes = 0
        self.dropped = 0
        self.coalesced = 0
        self._cond = threading.Condition()
        self._async_waiters: list[tuple[asyncio.AbstractEventLoop, asyncio.Event]] = []

    def put(self, item: Any, key: Any = None) -> None:
        """Queue `item`; with a `key` ("latest" policy) replace the waiting item of that key instead."""
        with self._cond:
            if key is not None:
                waiting = self._latest.get(key)
                if waiting is not None:
                    size = _size(item)
                    self.bytes += size - waiting.size
                    waiting.item, waiting.size = item, size
                    self.coalesced += 1
                    return
            slot = _Slot(item, key)
            while self._items and (
                len(self._items) >= self.maxlen
                or (self.max_bytes is not None and self.bytes + slot.size > self.max_bytes)
            ):
                self._forget(self._items.popleft())
                self.dropped += 1
            if key is not None:
                self._latest[key] = slot
            self._items.append(slot)
            self.bytes += slot.size
            self._cond.notify()
            waiters, self._async_waiters = self._async_waiters, []
        for loop, event in waiters:
            with contextlib.suppress(RuntimeError):  # that loop is closed
                loop.call_soon_threadsafe(event.set)

    def _take(self) -> Any:
        slot = self._items.popleft()
        self._forget(slot)
        return slot.item

    def _forget(self, slot: _Slot) -> None:
        self.bytes -= slot.size
        if slot.key is not None and self._latest.get(slot.key) is slot:
            del self._latest[slot.key]

    def __len__(self) -> int:
        return len(self._items)

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
            return True, self._take()

    async def aget(self, timeout: float | None) -> tuple[bool, Any]:
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        while True:
            with self._cond:
                if self._items:
                    return True, self._take()
                event = asyncio.Event()
                self._async_waiters.append((loop, event))
            remaining = None if deadline is None else deadline - loop.time()
            if remaining is not None and remaining <= 0:
                return False, None
            try:
                await asyncio.wait_for(event.wait(), remaining)
            except TimeoutError:
                return False, None
