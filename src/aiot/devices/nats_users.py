"""Turns the device registry into NATS users: each enabled device with an active credential may connect and
use exactly its own subjects (see `aiot.devices.subjects.device_permissions`)."""

from __future__ import annotations

from sqlalchemy.orm import Session

from aiot.bus.auth import NatsUser
from aiot.devices.inventory import connectable_devices
from aiot.devices.subjects import device_permissions
from aiot.natsauth.sources import register_user_source


@register_user_source
def device_users(session: Session) -> list[NatsUser]:
    users = []
    for device in connectable_devices(session):
        # "nats" permissions for both transports: nats-server >= 2.12 (we ship 2.15) grants an MQTT session its
        # internal `$MQTT.sub.>` delivery subjects implicitly, and granting them explicitly would let the same
        # credential read other MQTT sessions' QoS 1 traffic over a plain NATS connection.
        permissions = device_permissions(device.device_id, device.kind, "nats")  # type: ignore[arg-type]
        users.append(
            NatsUser(
                username=device.device_id,
                password_hash=device.password_bcrypt,
                publish=permissions.publish,
                subscribe=permissions.subscribe,
            )
        )
    return users
