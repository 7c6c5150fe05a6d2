"""Short, URL-safe ids prefixed by kind (`usr_…`, `mdl_…`, `dev_…`) so a log line says what it names.

The alphabet has no dots: ids appear inside NATS subjects and MQTT topics, where a dot is a separator.
"""

from __future__ import annotations

import secrets
import string

_ALPHABET = string.ascii_letters + string.digits
ID_LENGTH = 12


def new_id(prefix: str) -> str:
    """A new random id such as `usr_4fQ9zT1bXc2A` (about 71 bits of randomness)."""
    return f"{prefix}_" + "".join(secrets.choice(_ALPHABET) for _ in range(ID_LENGTH))
