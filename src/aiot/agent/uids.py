"""Unprivileged uids for workloads and environment builds, when the agent runs as root.

Why one uid per workload: files a workload writes (its scratch), its processes (signals, /proc) and its
RLIMIT_NPROC are then its own; another workload on the node, under another uid, can neither read its
`config.json` (which holds its NATS password) nor signal it. Why a separate uid for builds: a package's
build (a source distribution allowed by the admin) must not be able to touch any workload, and workloads
must not be able to write the shared uv cache.

The range (`base`, `count`) is an admin setting; it should not overlap the machine's accounts or its
/etc/subuid ranges (the default, 1 500 000 000 + 2^20, is far above both). Slot 0 is the build uid. A
workload's uid is picked by hashing the agent's data dir and the workload id into the rest of the range, so
two agents on one machine (each with its own data dir) almost never pick the same uid; within one agent a
taken uid is skipped (linear probing). gid = uid: no groups are shared.
"""

from __future__ import annotations

import hashlib

from aiot.agent.sandbox import Identity

DEFAULT_BASE = 1_500_000_000
DEFAULT_COUNT = 1 << 20
MAX_UID = 4_294_967_294  # (uid_t)-1 is "no change"


class UidPool:
    """Hands out per-workload identities from `[base + 1, base + count)`; `build` is slot 0."""

    def __init__(self, base: int = DEFAULT_BASE, count: int = DEFAULT_COUNT, salt: str = "") -> None:
        if base < 1000 or count < 2 or base + count - 1 > MAX_UID:
            raise ValueError(
                f"workload uid range {base}+{count} is not usable: base must be >= 1000, count >= 2, "
                f"and the range must end below {MAX_UID}"
            )
        self.base, self.count, self.salt = base, count, salt
        self._taken: dict[int, tuple[str, int]] = {}  # uid -> (workload id, holders)

    @property
    def build(self) -> Identity:
        """The uid every environment build runs as."""
        return Identity(self.base, self.base)

    def acquire(self, workload_id: str) -> Identity:
        """The uid of `workload_id` (the same for all its generations while any is held)."""
        for uid, (owner, holders) in self._taken.items():
            if owner == workload_id:
                self._taken[uid] = (owner, holders + 1)
                return Identity(uid, uid)
        if len(self._taken) >= self.count - 1:
            raise RuntimeError(f"all {self.count - 1} workload uids are in use")
        digest = hashlib.sha256(f"{self.salt}\0{workload_id}".encode()).digest()
        slot = int.from_bytes(digest[:8], "big") % (self.count - 1)
        while self.base + 1 + slot in self._taken:
            slot = (slot + 1) % (self.count - 1)
        uid = self.base + 1 + slot
        self._taken[uid] = (workload_id, 1)
        return Identity(uid, uid)

    def release(self, workload_id: str) -> None:
        for uid, (owner, holders) in list(self._taken.items()):
            if owner == workload_id:
                if holders > 1:
                    self._taken[uid] = (owner, holders - 1)
                else:
                    del self._taken[uid]
                return
