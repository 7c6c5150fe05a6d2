"""The control plane's data directory is private: the directory 0700, the database and every secret 0600.

Why explicit modes and not only a process umask: the files are created by different code (SQLite, nats-server's
config writer, the secret store), some run inside library calls that pass their own mode, and data directories
made by an older version must be tightened on upgrade, not only new ones created right. A umask would also reach
package files the node agents unpack for sandboxed workloads, which must stay readable.
"""

from __future__ import annotations

import contextlib
import os
import stat
from pathlib import Path

PRIVATE_DIR = 0o700
PRIVATE_FILE = 0o600
# Files directly in the data dir that hold secrets or the whole state (nats/ keeps its own, see aiot.bus).
PRIVATE_FILES = ("aiot.db", "aiot.db-wal", "aiot.db-shm", "aiot.db-journal", "secret.key")


def tighten(path: Path, mode: int) -> None:
    """chmod `path` to `mode` when it exists with any wider bit; a file someone else owns is left alone."""
    with contextlib.suppress(FileNotFoundError, PermissionError):
        if stat.S_IMODE(path.stat().st_mode) & ~mode:
            os.chmod(path, mode)


def prepare_data_dir(path: Path) -> Path:
    """Create the data dir 0700 (or tighten an existing one) and tighten the known private files in it."""
    path.mkdir(parents=True, exist_ok=True, mode=PRIVATE_DIR)
    tighten(path, PRIVATE_DIR)
    for name in PRIVATE_FILES:
        tighten(path / name, PRIVATE_FILE)
    tighten(path / "nats", PRIVATE_DIR)
    return path


def create_private_file(path: Path) -> None:
    """Create an empty 0600 file unless it exists (then only tighten it): SQLite gives its -wal and -shm files the
    mode of the database file, so creating that file 0600 first makes all three private."""
    try:
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, PRIVATE_FILE))
    except FileExistsError:
        tighten(path, PRIVATE_FILE)
