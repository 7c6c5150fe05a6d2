"""Fixtures shared by every test area: database URLs (SQLite and the machine's PostgreSQL), settings, free ports.

PostgreSQL tests each get a private schema in the `test` database (search_path), so they run in parallel with
other projects' tests and leave nothing behind. They are skipped only where no PostgreSQL is reachable.
"""

from __future__ import annotations

import os
import secrets
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

# Before anything imports the platform: every platform this suite starts (in-process or as a child, which
# inherits it) hashes passwords at the cheapest cost (aiot.bus.auth.insecure_fast_hashes); thousands of users,
# devices and workloads at full cost were minutes of the suite's CPU. tests/accounts/test_password_cost.py checks
# the full cost everywhere else.
os.environ.setdefault("AIOT_INSECURE_FAST_HASHES", "1")

from tests.support.azurite import Azurite, running_azurite  # noqa: E402

POSTGRES_URL = os.environ.get("AIOT_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _postgres_reachable() -> bool:
    try:
        import psycopg

        with psycopg.connect(POSTGRES_URL.replace("+psycopg", ""), connect_timeout=3):
            return True
    except Exception:  # noqa: BLE001 - any failure means "not reachable here"
        return False


_PG_OK: bool | None = None


def postgres_available() -> bool:
    global _PG_OK
    if _PG_OK is None:
        _PG_OK = _postgres_reachable()
    return _PG_OK


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """A PostgreSQL URL whose search_path is a fresh schema, dropped afterwards."""
    if not postgres_available():
        pytest.skip(f"no PostgreSQL reachable at {POSTGRES_URL}")
    import psycopg

    schema = "aiot_t_" + secrets.token_hex(6)
    plain = POSTGRES_URL.replace("+psycopg", "")
    with psycopg.connect(plain, autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA "{schema}"')
    try:
        yield f"{POSTGRES_URL}?options=-csearch_path%3D{schema}"
    finally:
        with psycopg.connect(plain, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA "{schema}" CASCADE')


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Runs the test once on SQLite and once on PostgreSQL."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'aiot.db'}"
    return request.getfixturevalue("postgres_url")


@pytest.fixture(scope="session")
def azurite(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Azurite]:
    """Azurite's blob service for this test process (each test uses its own container prefix)."""
    with running_azurite(tmp_path_factory.mktemp("azurite")) as running:
        yield running


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'aiot.db'}"


# Tests whose assertions are about time (restart within N s, zero restarts under delay, latency while slow clients
# hold connections, a log line findable within 2 s): `scripts/test` runs them one at a time after the rest, which
# it runs five files at a time (most tests wait on real processes, not on the CPU: the suite used about one
# of two cores at three).
SERIAL = (
    "tests/cluster/",
    "tests/e2e/test_demo.py",
    "tests/agent/test_supervisor.py",
    "tests/web/test_logs_and_serving.py",
    "tests/reliability/test_oversized_and_slow.py",
    "tests/logs/test_query_api.py",
)
# The files that take longest (seconds of one worker, measured on 2 cores), started first: xdist's `loadfile`
# hands out files in collection order, and a long file started last is the suite's tail.
LONGEST_FIRST = (
    "tests/web/test_accessibility.py",  # a browser for 40 s; its focus test waits up to 30 s for a live refresh
    "tests/cluster/test_delay.py",
    "tests/launch/test_control_plane.py",
    "tests/reliability/test_load.py",
    "tests/agent/test_docker_runtime.py",  # image builds; its node test alone ~100 s
    "tests/cli/test_cli_workflow.py",
    "tests/reliability/test_service_replicas.py",
    "tests/reliability/test_api_schemathesis.py",
    "tests/reliability/test_disk_full.py",
    "tests/api/test_roles_matrix.py",
    "tests/accounts/test_accounts.py",
    "tests/sdk/test_models_e2e.py",
    "tests/api/test_web_security.py",
    "tests/bench/test_smoke.py",
    "tests/bench/test_smoke_docker.py",
    "tests/blobs/test_migrate.py",
    "tests/cli/test_control_plane_cli.py",
    "tests/reliability/test_faults.py",
    "tests/web/test_roles.py",
    "tests/reliability/test_fuzz_codecs.py",
)


def _start_rank(item: pytest.Item) -> int:
    path = item.nodeid.split("::", 1)[0]
    return LONGEST_FIRST.index(path) if path in LONGEST_FIRST else len(LONGEST_FIRST)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if item.nodeid.startswith(SERIAL):
            item.add_marker(pytest.mark.serial)
    items.sort(key=_start_rank)  # stable: tests keep their order within a file
