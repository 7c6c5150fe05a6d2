"""Login throttling: exponential back-off per account and per client address.

Policy (the numbers are settings, see `ThrottlePolicy.from_settings`):
- After `free_failures` wrong passwords in a row, an account or a client address is locked for `backoff_s`,
  doubling with every further failure. While locked, login answers 429 with `Retry-After` without even checking
  the password; after the lock the correct password works (and resets the account's count).
- The per-address lock is the one that grows (up to `address_max_s`, an hour by default): a guesser is slowed
  down wherever they aim. The per-account lock is short and capped (`account_max_s`, a minute by default), and
  it does not apply to a client address the account has logged in from before: an attacker hammering `admin`
  from elsewhere cannot keep the admin out of their own usual address, and at worst delays a new address by a
  minute at a time.
- Counts are forgotten after a quiet spell (no failure for `forget_s`).

The state lives in this process's memory: a restart forgets it, and with several API replicas behind a load
balancer each keeps its own counts (a guesser gets at most replicas x the budget, still exponentially slowed).
That is a deliberate trade: a login attempt costs no database write, and no schema change is needed.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from aiot.settings import Settings

audit = logging.getLogger("aiot.audit")
MAX_ENTRIES = 50_000  # per table; the oldest go first (a flood of made-up usernames cannot fill memory)
KNOWN_PER_ACCOUNT = 16


@dataclass(frozen=True)
class ThrottlePolicy:
    free_failures: int = 5
    backoff_s: float = 1.0
    account_max_s: float = 60.0
    address_max_s: float = 3600.0
    forget_s: float = 900.0

    @classmethod
    def from_settings(cls, settings: Settings) -> ThrottlePolicy:
        return cls(
            free_failures=settings.login_free_failures,
            backoff_s=settings.login_backoff_s,
            account_max_s=settings.login_account_lock_max_s,
            address_max_s=settings.login_address_lock_max_s,
            forget_s=max(900.0, settings.login_address_lock_max_s),
        )

    def lock_for(self, failures: int, cap: float) -> float:
        """Seconds of lock after `failures` failures in a row (0 within the free ones)."""
        over = failures - self.free_failures
        return 0.0 if over <= 0 else min(cap, self.backoff_s * 2 ** min(over - 1, 40))


@dataclass
class _Count:
    failures: int = 0
    locked_until: float = 0.0
    last_failure: float = 0.0


class LoginThrottle:
    """Thread-safe (sync routes run in a thread pool). `clock` is monotonic seconds, injectable for tests."""

    def __init__(self, policy: ThrottlePolicy, clock: Callable[[], float] = time.monotonic) -> None:
        self.policy = policy
        self.clock = clock
        self._lock = threading.Lock()
        self._accounts: OrderedDict[str, _Count] = OrderedDict()
        self._addresses: OrderedDict[str, _Count] = OrderedDict()
        self._known: OrderedDict[str, OrderedDict[str, None]] = OrderedDict()

    def _get(self, table: OrderedDict[str, _Count], key: str, now: float) -> _Count | None:
        count = table.get(key)
        if count is not None and now - count.last_failure > self.policy.forget_s and now >= count.locked_until:
            del table[key]
            return None
        return count

    def retry_after(self, account: str, address: str) -> float:
        """Seconds until this account may try from this address (0: go ahead)."""
        now = self.clock()
        with self._lock:
            waits = [0.0]
            by_address = self._get(self._addresses, address, now)
            if by_address is not None:
                waits.append(by_address.locked_until - now)
            by_account = self._get(self._accounts, account, now)
            if by_account is not None and address not in self._known.get(account, {}):
                waits.append(by_account.locked_until - now)
            return max(waits)

    def failed(self, account: str, address: str) -> None:
        now = self.clock()
        with self._lock:
            locks = []
            for table, key, cap in (
                (self._accounts, account, self.policy.account_max_s),
                (self._addresses, address, self.policy.address_max_s),
            ):
                count = self._get(table, key, now) or _Count()
                count.failures += 1
                count.last_failure = now
                lock = self.policy.lock_for(count.failures, cap)
                count.locked_until = now + lock
                table[key] = count
                table.move_to_end(key)
                while len(table) > MAX_ENTRIES:
                    table.popitem(last=False)
                locks.append((count.failures, lock))
        (account_failures, account_lock), (address_failures, address_lock) = locks
        audit.warning(
            "login failed: account %r from %s (%d in a row for the account, %d for the address; "
            "locked %.0f s / %.0f s)",
            account[:64],
            address,
            account_failures,
            address_failures,
            account_lock,
            address_lock,
        )

    def refused(self, account: str, address: str, wait: float) -> None:
        audit.warning("login refused while locked: account %r from %s (retry in %.0f s)", account[:64], address, wait)

    def succeeded(self, account: str, address: str) -> None:
        """The account's count starts again, and this address is known for it (exempt from its lock)."""
        with self._lock:
            self._accounts.pop(account, None)
            known = self._known.setdefault(account, OrderedDict())
            known[address] = None
            known.move_to_end(address)
            while len(known) > KNOWN_PER_ACCOUNT:
                known.popitem(last=False)
            self._known.move_to_end(account)
            while len(self._known) > MAX_ENTRIES:
                self._known.popitem(last=False)
