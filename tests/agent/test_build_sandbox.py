"""Issue 14 item 1: an environment build runs package code (a source distribution's setup.py) only inside the
build sandbox, as an unprivileged uid, without the agent's environment; and only for allow-listed names.

The sdist is real and built by real uv (setuptools comes from the machine's package index, inside the
sandbox); its setup.py records what it could see into the package it installs, and the test reads that back.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import json
import os
import subprocess
import tarfile
from pathlib import Path

import pytest

from aiot.agent.envs import EnvBuilder, EnvBuildError
from aiot.agent.workload import PrepareError, package_requirements
from tests.agent.conftest import SharedEnv, needs_bwrap

SETUP_PY = """
import json, os
from setuptools import setup

seen = {"uid": os.getuid(), "euid": os.geteuid(), "env": sorted(os.environ)}
for path in json.loads(os.environ.get("PROBE_PATHS", "null") or "null") or PATHS:
    try:
        with open(path) as fh:
            seen[path] = "read:" + fh.read(40)
    except OSError as exc:
        seen[path] = "denied:" + type(exc).__name__
for folder in ("/root", DATA):
    try:
        seen["ls " + folder] = sorted(os.listdir(folder))
    except OSError as exc:
        seen["ls " + folder] = "denied:" + type(exc).__name__
os.makedirs("aiot_leak_probe", exist_ok=True)
with open("aiot_leak_probe/__init__.py", "w") as fh:
    fh.write("SEEN = " + repr(json.dumps(seen)) + "\\n")
setup(name="aiot-leak-probe", version="0.1", packages=["aiot_leak_probe"])
"""


def _sdist(dest: Path, paths: list[str], data: Path) -> Path:
    """aiot-leak-probe 0.1 as a real sdist (setup.py + PKG-INFO) in `dest` (a find-links folder)."""
    dest.mkdir(parents=True, exist_ok=True)
    files = {
        "setup.py": f"PATHS = {paths!r}\nDATA = {str(data)!r}\n" + SETUP_PY,
        "PKG-INFO": "Metadata-Version: 2.1\nName: aiot-leak-probe\nVersion: 0.1\n",
    }
    archive = dest / "aiot_leak_probe-0.1.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        for name, text in files.items():
            raw = text.encode()
            info = tarfile.TarInfo(f"aiot_leak_probe-0.1/{name}")
            info.size, info.mode = len(raw), 0o644
            tar.addfile(info, io.BytesIO(raw))
    return archive


def _builder(shared_env: SharedEnv, tmp_path: Path, data: Path, links: Path, allow: tuple[str, ...]) -> EnvBuilder:
    builder = EnvBuilder(tmp_path / "envs-cache", hidden=(data,), source_build_allow=allow, find_links=(links,))
    if allow:  # its own cache is bound on its own: borrow the session's warm one (wheels of the SDK's needs)
        builder.uv_cache = shared_env.builder.uv_cache
    return builder


@needs_bwrap
def test_allowed_sdist_builds_in_the_sandbox_and_sees_no_data_dir(
    shared_env: SharedEnv, tmp_path: Path, data_outside_tmp: Path
) -> None:
    data = data_outside_tmp
    (data / "nats").mkdir(parents=True)
    secret = data / "secret.key"
    secret.write_text("platform-secret-key")
    creds = data / "nats" / "platform-credentials.json"
    creds.write_text('{"password": "hunter2"}')
    links = tmp_path / "links"
    _sdist(links, [str(secret), str(creds), "/etc/shadow"], data)
    builder = _builder(shared_env, tmp_path, data, links, allow=("aiot-leak-probe",))
    os.environ["AIOT_TEST_AGENT_SECRET"] = "must-not-leak"
    try:
        python = asyncio.run(builder.build(["aiot-leak-probe==0.1"]))
    finally:
        del os.environ["AIOT_TEST_AGENT_SECRET"]
    out = subprocess.run(
        [str(python), "-I", "-c", "import aiot_leak_probe as m; print(m.SEEN)"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    seen = json.loads(out.stdout)
    print(seen)
    assert seen["uid"] != 0 and seen["euid"] != 0
    assert not [k for k in seen["env"] if k.startswith("AIOT")], seen["env"]
    assert seen[str(secret)] == seen[str(creds)] == "denied:FileNotFoundError"
    assert seen["/etc/shadow"].startswith("denied:")
    assert seen[f"ls {data}"] == [] and seen["ls /root"] in ([], [".pyenv"])  # empty covers
    env = python.parent.parent
    assert env.stat().st_uid == 0 and (env / "lib").stat().st_uid == 0  # handed to root: no build can alter it


@needs_bwrap
def test_sdists_are_refused_unless_allow_listed(shared_env: SharedEnv, tmp_path: Path) -> None:
    data = tmp_path / "agent-data"
    data.mkdir()
    links = tmp_path / "links"
    _sdist(links, [], data)
    builder = _builder(shared_env, tmp_path, data, links, allow=())
    assert builder.build_options() == ["--no-build"]
    with pytest.raises(EnvBuildError) as info:
        asyncio.run(builder.build(["aiot-leak-probe==0.1"]))
    assert "aiot-leak-probe" in str(info.value) and "uv pip install failed" in str(info.value)


def _package(root: Path, manifest: dict, files: dict[str, str]) -> Path:
    root.mkdir(parents=True)
    (root / "model.json").write_text(json.dumps(manifest))
    for name, text in files.items():
        (root / name).write_text(text)
    return root


def test_agent_installs_only_the_requirements_file_the_manifest_names(tmp_path: Path) -> None:
    """On main the agent read `requirements.txt` whatever the manifest named (the validator checked reqs.txt)."""
    pkg = _package(
        tmp_path / "p",
        {"name": "m", "requirements": "reqs.txt"},
        {"reqs.txt": "numpy>=1.26\n", "requirements.txt": "evil @ http://127.0.0.1:1/evil-1.0.tar.gz\n"},
    )
    assert package_requirements(pkg, "model", "reqs.txt") == ["numpy>=1.26"]
    checked = hashlib.sha256(b"numpy>=1.26\n").hexdigest()  # what the upload recorded (requirements_sha256)
    assert package_requirements(pkg, "model", "reqs.txt", checked) == ["numpy>=1.26"]
    (pkg / "reqs.txt").write_text("numpy>=1.26\nevil\n")  # changed after validation
    with pytest.raises(PrepareError, match="SHA-256 differs"):
        package_requirements(pkg, "model", "reqs.txt", checked)
    with pytest.raises(PrepareError, match="names 'reqs.txt' but the platform validated 'requirements.txt'"):
        package_requirements(pkg, "model", "requirements.txt")
    bad = _package(tmp_path / "q", {"name": "m"}, {"requirements.txt": "numpy\n--extra-index-url http://x/simple\n"})
    with pytest.raises(PrepareError, match=r"requirements.txt line 2: pip options are not allowed"):
        package_requirements(bad, "model")
    missing = _package(tmp_path / "r", {"name": "m", "requirements": "deps.txt"}, {})
    with pytest.raises(PrepareError, match="deps.txt"):
        package_requirements(missing, "model")
    assert package_requirements(_package(tmp_path / "s", {"name": "m"}, {}), "model") == []
