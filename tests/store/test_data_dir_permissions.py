"""The data directory is private: the directory 0700; the SQLite database, its WAL and SHM files and the secret
key 0600, even under the common umask 022 and for files an older version left world-readable."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import text

from aiot.datadir import prepare_data_dir
from aiot.secrets_store import platform_secret
from aiot.settings import Settings
from aiot.store import migrate
from aiot.store.engine import Database


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture
def umask_022() -> Iterator[None]:
    """What a login shell usually has: files 0644 and directories 0755 unless the code says otherwise."""
    old = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(old)


def test_new_data_dir_database_wal_shm_and_secret_are_private(tmp_path: Path, umask_022: None) -> None:
    data = prepare_data_dir(tmp_path / "data")
    settings = Settings(data_dir=data)
    migrate.upgrade(settings.effective_database_url)
    db = Database(settings.effective_database_url)
    try:
        with db.engine.connect() as conn:  # an open connection in WAL mode keeps -wal and -shm on disk
            conn.execute(text("CREATE TABLE IF NOT EXISTS probe (x INTEGER)"))
            conn.commit()
            platform_secret(settings)
            files = {name: mode(data / name) for name in ("aiot.db", "aiot.db-wal", "aiot.db-shm", "secret.key")}
    finally:
        db.dispose()
    assert mode(data) == 0o700
    assert files == dict.fromkeys(files, 0o600), {k: oct(v) for k, v in files.items()}


def test_files_an_older_version_left_readable_are_tightened_at_start(tmp_path: Path, umask_022: None) -> None:
    data = tmp_path / "data"
    data.mkdir(mode=0o755)
    for name in ("aiot.db", "aiot.db-wal", "secret.key"):
        (data / name).write_bytes(b"")
        os.chmod(data / name, 0o644)
    prepare_data_dir(data)
    assert mode(data) == 0o700
    assert {name: mode(data / name) for name in ("aiot.db", "aiot.db-wal", "secret.key")} == dict.fromkeys(
        ("aiot.db", "aiot.db-wal", "secret.key"), 0o600
    )


def test_a_database_url_outside_the_data_dir_is_created_private(tmp_path: Path, umask_022: None) -> None:
    url = f"sqlite:///{tmp_path / 'elsewhere' / 'platform.db'}"
    migrate.upgrade(url)
    assert mode(tmp_path / "elsewhere") == 0o700
    assert mode(tmp_path / "elsewhere" / "platform.db") == 0o600
