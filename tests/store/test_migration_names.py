"""Upgrading a platform from before names had owners: who gets each name, what running instances pin, and
who owns the model deployments end users' instances started."""

from __future__ import annotations

import json

from sqlalchemy import text

from aiot.store import migrate
from aiot.store.engine import make_engine

NOW = "2026-01-01 00:00:00.000000"


def _seed(conn: object) -> None:
    run = conn.execute  # type: ignore[attr-defined]
    for uid, name, role in (
        ("usr_a", "alice", "ai_developer"),
        ("usr_m", "mallory", "ai_developer"),
        ("usr_e", "eve", "end_user"),
        ("usr_d", "dora", "app_developer"),
    ):
        run(
            text(
                "INSERT INTO users (id, username, role, password_hash, disabled, created_at, password_changed_at) "
                "VALUES (:i, :n, :r, 'x', false, :t, :t)"
            ),
            {"i": uid, "n": name, "r": role, "t": NOW},
        )
    # alice published comfort first; mallory's later, higher version is the hijack the upgrade must not reward
    for mid, owner, version, at in (
        ("mdl_1", "usr_a", "1.0.0", "2026-01-01 00:00:00.000000"),
        ("mdl_2", "usr_m", "1.9.0", "2026-01-02 00:00:00.000000"),
    ):
        run(
            text(
                "INSERT INTO model_packages (id, name, version, sha256, size, manifest, status, created_at, owner_id) "
                "VALUES (:i, 'comfort', :v, 'x', 1, '{}', 'active', :t, :o)"
            ),
            {"i": mid, "v": version, "t": at, "o": owner},
        )
    run(
        text(
            "INSERT INTO app_packages (id, name, version, sha256, size, manifest, status, created_at, kind, "
            "owner_id) VALUES ('app_1', 'classroom', '1.0.0', 'x', 1, '{}', 'active', :t, 'backend', 'usr_d')"
        ),
        {"t": NOW},
    )
    run(
        text(
            "INSERT INTO locations (id, name, kind, address, timezone, created_at) "
            "VALUES ('loc_1', 'room', 'room', '', 'UTC', :t)"
        ),
        {"t": NOW},
    )
    run(
        text(
            "INSERT INTO model_deployments (id, model_id, replicas, owner_id, created_at) "
            "VALUES ('dep_1', 'mdl_1', 1, 'usr_e', :t)"
        ),
        {"t": NOW},
    )
    for wid, kind, package, group, config in (
        ("wl_m", "model", "mdl_1", "dep_1", {}),
        ("wl_a", "app", "app_1", "ins_1", {"models": {"comfort": {"model_id": "mdl_1", "name": "comfort"}}}),
    ):
        run(
            text(
                "INSERT INTO workloads (id, kind, package_id, package_sha256, owner_id, group_id, desired, generation,"
                " config, resources, selector, nats_password_bcrypt, created_at, updated_at) VALUES (:i, :k, :p, 'x',"
                " 'usr_e', :g, 'running', 1, :c, '{}', '{}', 'x', :t, :t)"
            ),
            {"i": wid, "k": kind, "p": package, "g": group, "c": json.dumps(config), "t": NOW},
        )
    for iid, workload in (("ins_1", "wl_a"), ("ins_2", None)):
        run(
            text(
                "INSERT INTO app_instances (id, app_id, location_id, owner_id, name, bindings, settings, state, "
                "workload_id, created_at) VALUES (:i, 'app_1', 'loc_1', 'usr_e', '', '{}', '{}', 'running', :w, :t)"
            ),
            {"i": iid, "w": workload, "t": NOW},
        )


def test_upgrade_gives_names_to_first_uploaders_and_pins_running_instances(db_url: str) -> None:
    migrate.upgrade(db_url, "0006")
    engine = make_engine(db_url)
    try:
        with engine.begin() as conn:
            _seed(conn)
        migrate.upgrade(db_url)
        with engine.connect() as conn:
            owners = dict(conn.execute(text("SELECT kind || ':' || name, owner_id FROM package_names")).all())
            assert owners == {"model:comfort": "usr_a", "app:classroom": "usr_d"}
            pins = {
                i: json.loads(m) if isinstance(m, str) else m
                for i, m in conn.execute(text("SELECT id, models FROM app_instances")).all()
            }
            assert pins == {"ins_1": {"comfort": "mdl_1"}, "ins_2": {}}
            assert conn.execute(text("SELECT owner_id FROM model_deployments")).scalar() == "usr_a"
            workload_owners = dict(conn.execute(text("SELECT id, owner_id FROM workloads")).all())
            assert workload_owners == {"wl_m": "usr_a", "wl_a": "usr_e"}  # the instance's own workload stays hers
        migrate.downgrade(db_url, "0006")
        assert "package_names" not in migrate.current_tables(db_url)
    finally:
        engine.dispose()
