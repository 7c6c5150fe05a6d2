"""Azurite (Microsoft's Azure Storage emulator, npm package `azurite`) on a free port, for the Azure Blob backend.

`scripts/test-services` installs it (`npm install -g azurite`); tests that need it skip, naming what is missing,
only where it is not installed. The connection string uses Azurite's documented development account and key
(the same on every Azurite; not a secret).
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

ACCOUNT = "devstoreaccount1"
DEV_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="


@dataclass(frozen=True)
class Azurite:
    port: int
    proc: subprocess.Popen[bytes]

    @property
    def connection_string(self) -> str:
        return (
            f"DefaultEndpointsProtocol=http;AccountName={ACCOUNT};AccountKey={DEV_KEY};"
            f"BlobEndpoint=http://127.0.0.1:{self.port}/{ACCOUNT};"
        )


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def running_azurite(workdir: Path) -> Iterator[Azurite]:
    """Azurite's blob service with its data in `workdir`; stopped when the block ends."""
    binary = shutil.which("azurite-blob")
    if binary is None:
        pytest.skip("azurite-blob is not installed (scripts/test-services installs it: npm install -g azurite)")
    workdir.mkdir(parents=True, exist_ok=True)
    for attempt in range(3):  # the free port may be taken before Azurite binds it
        port = _free_port()
        with (workdir / "azurite.log").open("ab") as log:  # the child keeps its own copy of the handle
            proc = subprocess.Popen(
                [binary, "--blobHost", "127.0.0.1", "--blobPort", str(port), "--location", str(workdir),
                 "--skipApiVersionCheck", "--silent"],
                stdout=log,
                stderr=subprocess.STDOUT,
            )  # fmt: skip
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                break
            except OSError:
                time.sleep(0.1)
        if proc.poll() is None:
            break
        if attempt == 2:
            raise AssertionError(f"azurite did not start: {(workdir / 'azurite.log').read_text(errors='replace')}")
    try:
        yield Azurite(port, proc)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=2)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
