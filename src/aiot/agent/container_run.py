"""`python -m aiot.agent.container_run SPEC`: the process the supervisor runs for a `docker` workload.

It creates and starts the container described by SPEC (a `ContainerSpec` JSON file), copies the container's
stdout and stderr to its own, passes SIGTERM on, and exits with the container's status, so the supervisor
sees a container exactly as it sees a process. It holds the write end of the container's lifeline pipe: when
this process dies (SIGKILL after a hang, the agent or the node lost), the container's init kills the workload.

Exit status: the workload's own; 137 with an `OutOfMemoryError: ...` line on stderr when the kernel killed it
at its memory limit (the restart reason then says so); 125 with a `ContainerError: ...` line when the
container could not be created or started.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
from pathlib import Path
from typing import Any

from aiot.agent.docker_runtime import LIFELINE, ContainerSpec, docker_client, remove_container

CONTAINER_FAILED = 125


def _lifeline(directory: str) -> tuple[int, str]:
    """A FIFO in the run dir, opened for writing and kept open by this process; (write fd, path).

    It belongs to this process's uid (root on a root-run agent) and is read-only for others: the workload's
    init can open it for reading, but the workload cannot open it for writing, which would keep it alive
    after its agent is gone. (Replacing the path changes nothing: init opened the original before the workload
    started.)"""
    path = os.path.join(directory, ".lifeline")
    if os.path.lexists(path):
        os.unlink(path)
    os.mkfifo(path)
    os.chmod(path, 0o644)
    read_fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)  # lets the write open below succeed at once
    write_fd = os.open(path, os.O_WRONLY)
    os.close(read_fd)
    return write_fd, path


def _create(client: Any, spec: ContainerSpec, lifeline: str) -> Any:
    from docker.errors import NotFound

    with contextlib.suppress(NotFound):
        remove_container(client.containers.get(spec.name))  # a leftover of a killed launcher
    python = spec.argv[0]
    return client.containers.create(
        spec.image,
        command=[python, "-I", "-c", LIFELINE, "3", *spec.argv],
        entrypoint=["/bin/sh", "-c", f'exec 3<"{lifeline}" && exec "$@"', "aiot-init"],
        name=spec.name,
        working_dir=spec.cwd,
        environment=spec.env,
        user=spec.user,
        volumes=spec.binds,
        labels=spec.labels,
        network_mode="host",
        read_only=True,
        cap_drop=["ALL"],
        security_opt=["no-new-privileges"],
        pids_limit=512,
        mem_limit=f"{spec.memory_mb}m" if spec.memory_mb else None,
        memswap_limit=f"{spec.memory_mb}m" if spec.memory_mb else None,
        nano_cpus=int(spec.cpus * 1e9) if spec.cpus else None,
        stdin_open=False,
        tty=False,
    )


def _copy_output(container: Any) -> None:
    for out, err in container.attach(stdout=True, stderr=True, stream=True, logs=True, demux=True):
        if out:
            sys.stdout.buffer.write(out)
            sys.stdout.flush()
        if err:
            sys.stderr.buffer.write(err)
            sys.stderr.flush()


def main(spec_path: str) -> int:
    spec = ContainerSpec.from_json(Path(spec_path).read_text(encoding="utf-8"))
    client = docker_client()
    _write_fd, lifeline = _lifeline(spec.lifeline_dir)
    try:
        container = _create(client, spec, lifeline)
        container.start()
    except Exception as exc:  # noqa: BLE001 - any engine error: say it the way the supervisor reads errors
        print(f"ContainerError: {type(exc).__name__}: {exc}", file=sys.stderr, flush=True)
        return CONTAINER_FAILED

    def stop(signum: int, _frame: Any) -> None:
        threading.Thread(target=lambda: container.kill(signal=signal.Signals(signum).name), daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    copier = threading.Thread(target=_copy_output, args=(container,), daemon=True)
    copier.start()
    code = int(container.wait()["StatusCode"])
    copier.join(timeout=2.0)
    container.reload()
    state = container.attrs.get("State") or {}
    if state.get("OOMKilled"):
        print(
            f"OutOfMemoryError: the kernel killed the workload at its {spec.memory_mb} MiB memory limit",
            file=sys.stderr,
            flush=True,
        )
        code = 137
    remove_container(container)
    return code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
