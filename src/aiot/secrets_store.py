"""The platform's secret key, and credentials derived from it.

Workload passwords are derived (HMAC of the workload id and generation), so the control plane can hand the same
password to an agent on every poll without storing it anywhere in clear; NATS only ever sees a bcrypt hash.
A new generation gives a new password, so a restarted or moved workload's old credential stops working.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import secrets
from pathlib import Path

from aiot.datadir import PRIVATE_DIR
from aiot.settings import Settings


def platform_secret(settings: Settings) -> bytes:
    if settings.secret_key is not None:
        return settings.secret_key.get_secret_value().encode()
    path = settings.data_dir / "secret.key"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True, mode=PRIVATE_DIR)
        tmp = Path(f"{path}.{os.getpid()}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(secrets.token_urlsafe(48))
        try:
            os.link(tmp, path)  # first writer wins, even with several processes starting at once
        except FileExistsError:
            pass
        finally:
            tmp.unlink(missing_ok=True)
    return path.read_text().strip().encode()


def derive_password(secret: bytes, purpose: str, *parts: object) -> str:
    message = "\x00".join([purpose, *map(str, parts)]).encode()
    return base64.urlsafe_b64encode(hmac.new(secret, message, hashlib.sha256).digest()).decode().rstrip("=")
