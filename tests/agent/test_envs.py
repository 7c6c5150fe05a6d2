"""EnvBuilder with real uv: one cold build per session, cache hits, SDK injection, clear failures."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from aiot.agent.envs import MARKER, EnvBuilder, EnvBuildError, find_sdk_dir, normalise_requirements
from tests.agent.conftest import SharedEnv


def test_cold_build_then_instant_cache_hit_with_sdk_injected(shared_env: SharedEnv, tmp_path: Path) -> None:
    builder = shared_env.builder
    started = time.monotonic()
    again = asyncio.run(builder.build(list(reversed(shared_env.requirements)) + ["# a comment", ""]))
    hit = time.monotonic() - started
    print(f"cold build {shared_env.cold_seconds:.2f}s, cache hit {hit * 1000:.1f}ms")
    assert again == shared_env.python and builder.builds == 1 and hit < 0.5
    env = again.parent.parent
    assert (env / MARKER).is_file() and (env / "sdk" / "platform_sdk" / "__init__.py").is_file()
    # Run from an unrelated folder with -I: the SDK must come from the env's own copy, not from this repo.
    out = subprocess.run(
        [str(again), "-I", "-c", "import platform_sdk, sklearn, nats; print(platform_sdk.__file__)"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=60,
        check=True,
    )
    assert out.stdout.strip().startswith(str(env / "sdk" / "platform_sdk"))


def test_warm_uv_cache_and_sdk_change_give_a_fresh_env_built_once(shared_env: SharedEnv, tmp_path: Path) -> None:
    sdk = tmp_path / "platform_sdk"
    shutil.copytree(find_sdk_dir(), sdk, ignore=shutil.ignore_patterns("__pycache__"))
    (sdk / "_marker_for_test.py").write_text("CHANGED = True\n")
    builder = EnvBuilder(shared_env.builder.cache_dir, sdk_dir=sdk)
    assert builder.resolve(shared_env.requirements)[0] != shared_env.builder.resolve(shared_env.requirements)[0]

    async def three_at_once() -> list[Path]:
        return list(await asyncio.gather(*(builder.build(shared_env.requirements) for _ in range(3))))

    started = time.monotonic()
    pythons = asyncio.run(three_at_once())
    print(f"warm uv cache build: {time.monotonic() - started:.2f}s")
    assert len(set(pythons)) == 1 and pythons[0] != shared_env.python and builder.builds == 1
    out = subprocess.run(
        [str(pythons[0]), "-I", "-c", "import platform_sdk._marker_for_test as m; print(m.CHANGED)"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert out.stdout.strip() == "True"
    assert not list(builder.envs_dir.glob(".build-*")) and not list(builder.work_dir.glob(".build-*"))


def test_unsatisfiable_requirements_fail_with_uv_stderr(shared_env: SharedEnv) -> None:
    with pytest.raises(EnvBuildError) as info:
        asyncio.run(shared_env.builder.build(["numpy<0.1"]))
    message = str(info.value)
    assert message.startswith("uv pip install failed (exit")
    assert "numpy" in message and "unsatisfiable" in message
    key = shared_env.builder.resolve(["numpy<0.1"])[0]
    assert not shared_env.builder.env_dir(key).exists()
    assert not list(shared_env.builder.work_dir.glob(f".build-{key}-*"))


def test_cancelled_build_leaves_nothing_behind(shared_env: SharedEnv, tmp_path: Path) -> None:
    sdk = tmp_path / "platform_sdk"
    shutil.copytree(find_sdk_dir(), sdk, ignore=shutil.ignore_patterns("__pycache__"))
    (sdk / "_other.py").write_text("X = 1\n")
    builder = EnvBuilder(shared_env.builder.cache_dir, sdk_dir=sdk)
    key = builder.resolve([])[0]
    stale = builder.work_dir / f".build-{key}-killed"
    (stale / "venv").mkdir(parents=True)  # what a SIGKILLed agent leaves

    async def cancel_midway() -> None:
        task = asyncio.create_task(builder.build([]))
        # Cancel once the build has its work folder (uv then still has to create and fill the venv): a fixed
        # delay was sometimes longer than a whole build from a warm uv cache.
        deadline = time.monotonic() + 30
        while not [p for p in builder.work_dir.glob(f".build-{key}-*") if p != stale]:
            assert not task.done() and time.monotonic() < deadline, "the build made no work folder"
            await asyncio.sleep(0.001)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(cancel_midway())
    assert not builder.env_dir(key).exists()
    assert not list(builder.work_dir.glob(f".build-{key}-*"))
    python = asyncio.run(builder.build([]))  # and the next build succeeds
    assert python.exists()


def test_requirement_normalisation_and_refusals() -> None:
    assert normalise_requirements(["NumPy>=1.26  # maths", "", "httpx", "numpy >= 1.26"]) == [
        "httpx",
        "numpy>=1.26",
    ]
    with pytest.raises(EnvBuildError, match=r"requirements.txt line 2: pip options are not allowed \('--index-url'\)"):
        normalise_requirements(["numpy", "--index-url https://example.invalid/simple"], "requirements.txt")
    with pytest.raises(EnvBuildError, match="line 1: cannot parse requirement 'numpy>>1'"):
        normalise_requirements(["numpy>>1"])
    # The agent applies the validator's rule itself: no URL reaches uv even if a package slipped past upload.
    with pytest.raises(EnvBuildError, match=r"reqs.txt line 1: direct URL requirements are not allowed"):
        normalise_requirements(["evil @ http://127.0.0.1:1/evil-1.0.tar.gz"], "reqs.txt")
