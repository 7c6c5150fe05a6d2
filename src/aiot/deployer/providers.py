"""Node providers: who can create and destroy nodes. The seed used Azure VMs; we start with `local`.

A provider implements `NodeProvider`: `add_node()` starts a node agent that joins the cluster with a join token;
`remove_node(name)` stops it (after the autoscaler drained it). A cloud provider would create a VM whose start-up
script runs `aiot node join --server URL --token-file FILE`; nothing else in the platform changes.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from aiot.bus.process import pdeathsig_preexec

log = logging.getLogger(__name__)


@dataclass
class _LocalAgent:
    name: str
    process: subprocess.Popen[bytes]


class LocalNodeProvider:
    """Node agents as child processes of the control plane, each with its own data directory.

    They die with the control plane (PR_SET_PDEATHSIG): on a single machine "the node" is this machine, so a
    control plane restart brings them back fresh and their workloads are placed again.

    Each agent gets its own single-use join token from `join_token` (called once per node) in its environment
    (AIOT_JOIN_TOKEN, readable only by this user and root), never on its command line (readable by everyone).
    """

    name = "local"

    def __init__(
        self,
        server_url: str,
        join_token: Callable[[], str],
        data_dir: Path,
        log_level: str = "INFO",
        runtime: str = "process",
    ) -> None:
        self.server_url, self.join_token, self.data_dir, self.log_level = server_url, join_token, data_dir, log_level
        self.runtime = runtime
        self.agents: dict[str, _LocalAgent] = {}
        self._counter = 0

    def add_node(self) -> str:
        """Call from the event-loop thread: the parent-death signal follows the thread that forks."""
        self._counter += 1
        while f"local-{self._counter}" in self.agents:
            self._counter += 1
        name = f"local-{self._counter}"
        node_dir = self.data_dir / "nodes" / name
        node_dir.mkdir(parents=True, exist_ok=True)
        env = {k: v for k, v in os.environ.items() if not k.startswith("AIOT_")}
        # The agent hides its platform's data dir (database, NATS store, secrets) from workloads.
        env["AIOT_LOG_LEVEL"], env["AIOT_DATA_DIR"] = self.log_level, str(self.data_dir)
        env["AIOT_JOIN_TOKEN"] = self.join_token()
        log_file = (node_dir / "agent.log").open("ab")
        process = subprocess.Popen(
            [
                str(Path(sys.executable).parent / "aiot"),
                "node",
                "join",
                "--server",
                self.server_url,
                "--name",
                name,
                "--data-dir",
                str(node_dir),
                "--provider",
                self.name,
                "--env-cache",
                str(self.data_dir / "envs"),
                "--runtime",
                self.runtime,
            ],
            env=env,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            preexec_fn=pdeathsig_preexec(),
            start_new_session=True,
        )
        log_file.close()
        self.agents[name] = _LocalAgent(name, process)
        log.info("local node %s started (pid %d)", name, process.pid)
        return name

    def remove_node(self, node_name: str) -> None:
        agent = self.agents.pop(node_name, None)
        if agent is None:
            return
        agent.process.send_signal(signal.SIGTERM)
        try:
            agent.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            agent.process.kill()
            agent.process.wait()
        log.info("local node %s stopped", node_name)

    def managed(self) -> list[str]:
        return [name for name, agent in self.agents.items() if agent.process.poll() is None]

    def stop_all(self) -> None:
        for name in list(self.agents):
            self.remove_node(name)
