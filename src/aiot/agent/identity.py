"""The node's identity file (`<data_dir>/node.json`, mode 0600): node id, node token, NATS credentials.

Kept so a restarted agent is the same node (its token still works, no second registration under a new id);
re-registration with the join token happens only when the server answers 401.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

FILE_NAME = "node.json"


@dataclass
class NodeIdentity:
    server: str
    node_id: str
    node_token: str
    name: str
    nats: dict[str, Any] = field(default_factory=dict)


def write_private(path: Path, text: str) -> None:
    """Write `text` atomically to `path` with mode 0600 (the file holds secrets)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}-", dir=path.parent)
    try:
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def load_identity(data_dir: Path, server: str) -> NodeIdentity | None:
    """The stored identity for `server`, or None (absent, unreadable, or registered with another server)."""
    try:
        doc = json.loads((data_dir / FILE_NAME).read_text(encoding="utf-8"))
        ident = NodeIdentity(
            **{k: doc[k] for k in ("server", "node_id", "node_token", "name")},
            nats=dict(doc.get("nats") or {}),
        )
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return ident if ident.server.rstrip("/") == server.rstrip("/") else None


def save_identity(data_dir: Path, ident: NodeIdentity) -> None:
    write_private(data_dir / FILE_NAME, json.dumps(asdict(ident), indent=2))


def forget_identity(data_dir: Path) -> None:
    (data_dir / FILE_NAME).unlink(missing_ok=True)
