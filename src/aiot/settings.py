"""The platform's one settings class.

Every process (control plane, a lone service, a node agent, the CLI) reads the same `Settings`, so that one
`AIOT_` environment variable or one TOML file configures the whole platform. Values come, highest first,
from: constructor arguments, `AIOT_*` environment variables, the TOML file named by `AIOT_CONFIG_FILE`
(or `<data_dir>/aiot.toml` when it exists), and the defaults below, which are the embedded single-machine
set-up (SQLite + a private nats-server under the data directory).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

DEFAULT_DATA_DIR = Path("~/.local/share/aiot").expanduser()


def _toml_file() -> Path | None:
    """The TOML file to read, if any: explicit `AIOT_CONFIG_FILE`, else `<data_dir>/aiot.toml`."""
    explicit = os.environ.get("AIOT_CONFIG_FILE")
    if explicit:
        return Path(explicit).expanduser()
    data_dir = Path(os.environ.get("AIOT_DATA_DIR", str(DEFAULT_DATA_DIR))).expanduser()
    candidate = data_dir / "aiot.toml"
    return candidate if candidate.exists() else None


class Settings(BaseSettings):
    """Configuration of every platform process. See the module docstring for precedence."""

    model_config = SettingsConfigDict(env_prefix="AIOT_", extra="ignore", validate_default=True)

    data_dir: Path = Field(DEFAULT_DATA_DIR, description="Where SQLite, the NATS store, logs and caches live.")
    database_url: str | None = Field(
        None, description="SQLAlchemy URL; default is SQLite at <data_dir>/aiot.db. postgresql://... for PostgreSQL."
    )
    nats_url: str | None = Field(
        None, description="NATS server(s) to use, comma separated. Unset: start an embedded nats-server."
    )
    nats_user: str | None = Field(None, description="User for an external NATS server (with nats_url).")
    nats_password: SecretStr | None = Field(None, description="Password for an external NATS server.")
    nats_callout: bool = Field(
        False,
        description="The external NATS server (AIOT_NATS_URL) delegates client authentication to the "
        "platform through auth callout (`aiot nats callout-config` prints its server configuration): devices, "
        "nodes and workloads then connect with the credentials the platform issues, without provisioning.",
    )
    nats_system_user: str | None = Field(
        None,
        description="A system-account user of the external NATS server: lets the platform disconnect a "
        "revoked credential's open connections within seconds (auth callout only checks new connections).",
    )
    nats_system_password: SecretStr | None = Field(None, description="Password of nats_system_user.")
    nats_host: str = Field(
        "127.0.0.1",
        description="Address the embedded nats-server's client and MQTT listeners bind to (its "
        "monitor stays on loopback); 0.0.0.0 lets agents and devices on other hosts reach it.",
    )
    nats_port: int | None = Field(
        None,
        ge=1,
        le=65535,
        description="Client port of the embedded nats-server (e.g. 4222). Unset: a free "
        "port chosen on first start and kept while free. Set: that port or a clear start-up error.",
    )
    mqtt_port: int | None = Field(
        None,
        ge=1,
        le=65535,
        description="MQTT port of the embedded nats-server (e.g. 1883, what devices "
        "expect). Unset: a free port chosen on first start and kept while free. Set: that port or an error.",
    )
    jetstream_replicas: Literal[1, 3] = Field(
        1,
        description="Replicas of every stream, KV bucket and object store the platform creates: 1, or 3 "
        "on a NATS cluster of 3 or more servers (AIOT_NATS_URL). Existing ones are raised or lowered to it.",
    )
    nats_connect_timeout: float = Field(5.0, description="Seconds to wait for each NATS connection attempt.")
    nats_connect_attempts: int = Field(
        0, description="How many times to try NATS at start-up; 0 retries for ever (with a clear log line)."
    )
    host: str = Field("127.0.0.1", description="Address the control plane's HTTP server binds to.")
    port: int = Field(8080, description="Port of the control plane's HTTP server.")
    public_url: str | None = Field(None, description="URL users reach the control plane at (used in e-mails).")
    admin_password: SecretStr | None = Field(
        None, description="Password of the first admin; generated and printed once when unset."
    )
    admin_username: str = Field("admin", description="Username of the first admin.")
    apps_url: str | None = Field(
        None,
        description="URL browsers reach web apps' pages at (the apps origin). Its host must differ from the "
        "platform's (cookies ignore ports): e.g. https://apps.example.com. Default: http://localhost:<apps port> "
        "when the platform is at 127.0.0.1 (http://127.0.0.1:<apps port> when it is at localhost). A '{instance}' in "
        "it (https://{instance}.apps.example.com) gives each app instance a host of its own.",
    )
    apps_port: int = Field(
        0,
        ge=0,
        description="Port of the apps origin's HTTP server (beside the API, same bind address); 0 picks "
        "a free port at start. Set it (and apps_url) behind a firewall, proxy or with several replicas.",
    )
    token_ttl_hours: float = Field(24.0 * 7, gt=0, description="Lifetime of API tokens.")
    session_ttl_hours: float = Field(12.0, gt=0, description="Lifetime of a web session (browser login).")
    cookie_secure: bool | None = Field(
        None,
        description="Mark the platform's cookies Secure; default: on when public_url (or apps_url for the "
        "apps origin's cookie) is https.",
    )
    metrics_token: SecretStr | None = Field(
        None, description="When set, GET /metrics needs 'Authorization: Bearer <it>' (401 otherwise)."
    )
    login_free_failures: int = Field(
        5, ge=1, description="Wrong passwords in a row an account or a client address may have before back-off."
    )
    login_backoff_s: float = Field(
        1.0, gt=0, description="First lock after the free failures, in seconds; it doubles with each failure."
    )
    login_account_lock_max_s: float = Field(
        60.0, gt=0, description="Longest lock of one account (short, so an attacker cannot keep its owner out)."
    )
    login_address_lock_max_s: float = Field(
        3600.0, gt=0, description="Longest lock of one client address (the lock that grows for a guesser)."
    )
    secret_key: SecretStr | None = Field(
        None,
        description="Key that derives workload credentials; default: <data_dir>/secret.key, made once. "
        "Set the same value on every control plane replica.",
    )
    node_grace_seconds: float = Field(8.0, description="A node silent this long is lost; its work moves.")
    model_ready_deadline_seconds: float = Field(
        300.0,
        gt=0,
        description="An app waits this long for its models' first ready replica, then shows failed "
        "(it still starts once they are ready).",
    )
    prewarm_seconds: float = Field(
        120.0,
        gt=0,
        description="Models a scheduled run needs are deployed this long before it starts; models "
        "deployed for app runs are removed after this long with no run needing them.",
    )
    rollout_soak_seconds: float = Field(
        30.0,
        gt=0,
        description="How long a new version must run healthy (no restart, not degraded) before the "
        "upgrade succeeds and the old version is retired.",
    )
    rollout_ready_deadline_seconds: float = Field(
        240.0, gt=0, description="A new version not running after this long is rolled back."
    )
    rollout_max_restarts: int = Field(
        2, ge=1, description="Restarts of a new version (a crash loop) that roll it back."
    )
    degraded_after_failures: int = Field(
        5, ge=1, description="Consecutive failed callbacks after which a running app shows `degraded`."
    )
    join_token_ttl_minutes: float = Field(
        60.0, gt=0, description="Default lifetime of a node join token (an admin may ask for less or more)."
    )
    smtp_host: str | None = Field(None, description="SMTP server for e-mails; unset keeps mail in the outbox.")
    smtp_port: int = Field(25, description="SMTP port (587 with STARTTLS, 465 with implicit TLS).")
    smtp_user: str | None = Field(None, description="SMTP login user, if the server needs one.")
    smtp_password: SecretStr | None = Field(None, description="SMTP login password.")
    smtp_starttls: bool = Field(False, description="Upgrade the SMTP connection with STARTTLS.")
    smtp_ssl: bool = Field(False, description="Connect with implicit TLS (port 465).")
    mail_from: str = Field("aiot@localhost", description="Sender address of platform e-mails.")
    log_retention_days: float = Field(7.0, description="How long the live log stream keeps records.")
    log_archive_days: float = Field(90.0, description="How long daily log archives stay in the object store.")
    nodes: int = Field(0, description="Local node agents `aiot up` starts beside the control plane.")
    node_runtime: Literal["process", "docker"] = Field(
        "process",
        description="How a node runs workloads unless `aiot node join --runtime` says otherwise (also the local "
        "nodes of `aiot up --nodes N`): sandboxed processes, or a Docker container each.",
    )
    autoscale: bool = Field(False, description="Add/remove local nodes by load (the `local` node provider).")
    autoscale_min_nodes: int = Field(1, description="Never scale below this many provider-started nodes.")
    autoscale_max_nodes: int = Field(4, description="Never scale above this many provider-started nodes.")
    autoscale_high_cpu: float = Field(80.0, description="Average node CPU % that, held for the window, adds a node.")
    autoscale_low_cpu: float = Field(10.0, description="Average node CPU % that, held idle, removes a node.")
    autoscale_window_s: float = Field(60.0, description="How long the load must stay high before adding a node.")
    autoscale_idle_window_s: float = Field(300.0, description="How long the cluster must stay idle to remove one.")
    history_max_mb: int = Field(
        2048,
        gt=0,
        description="Size cap of the readings history stream (AIOT_READINGS), in MiB; the oldest "
        "readings go first. JetStream reserves it in the NATS store when the stream is created, so a data "
        "directory smaller than this cannot start: lower it on small disks.",
    )
    log_stream_max_mb: int = Field(
        0,
        ge=0,
        description="Size cap of the live log stream (AIOT_LOGS), in MiB, on top of log_retention_days; "
        "0 means no cap. Reserved in the NATS store like history_max_mb when set.",
    )
    artifact_store: Literal["nats", "azure"] = Field(
        "nats",
        description="Where package archives and daily log archives are kept: the NATS object store (nothing more "
        "to run) or Azure Blob storage (AIOT_AZURE_STORAGE_CONNECTION_STRING). `aiot store migrate` moves them.",
    )
    azure_storage_connection_string: SecretStr | None = Field(
        None, description="Connection string of the Azure storage account (artifact_store=azure)."
    )
    azure_container_prefix: str = Field(
        "aiot",
        pattern=r"^[a-z0-9]+(-[a-z0-9]+)*$",
        max_length=40,
        description="Prefix of the Azure containers: <prefix>-artifacts and <prefix>-log-archives.",
    )
    max_upload_mb: int = Field(200, description="Largest package upload accepted, in MiB (streamed to disk).")
    log_level: str = Field("INFO", description="Python log level of platform processes.")
    allow_unsandboxed: bool = Field(
        False,
        description="Let a node agent run uploaded code without bubblewrap (plain processes; the node then "
        "reports itself unsandboxed). Off: an agent without bwrap refuses to start.",
    )
    source_build_allow: str = Field(
        "",
        description="Comma-separated distribution names a node may build from source (their setup code runs "
        "in the build sandbox); every other requirement must come as a wheel.",
    )
    workload_uid_base: int = Field(
        1_500_000_000,
        description="First uid of a root-run node's workload uid range (the build uid; workloads "
        "get the uids after it). Must not overlap the machine's accounts or /etc/subuid.",
    )
    workload_uid_count: int = Field(1 << 20, description="Size of the workload uid range.")

    @field_validator("jetstream_replicas", mode="before")
    @classmethod
    def _replicas_from_text(cls, value: Any) -> Any:
        """`AIOT_JETSTREAM_REPLICAS=3` arrives as the text "3", which a Literal[1, 3] does not coerce."""
        return int(value) if isinstance(value, str) and value.strip().isdigit() else value

    @field_validator("data_dir", mode="before")
    @classmethod
    def _expand(cls, value: Any) -> Any:
        return Path(value).expanduser() if isinstance(value, str | Path) else value

    @model_validator(mode="after")
    def _nats_layout(self) -> Settings:
        """Combinations that cannot work are refused at start, naming the settings (not found out later)."""
        if self.jetstream_replicas > 1 and self.embedded_nats:
            raise ValueError(
                f"jetstream_replicas={self.jetstream_replicas} needs a NATS cluster of at least "
                f"{self.jetstream_replicas} servers: set AIOT_NATS_URL (the embedded server is one)"
            )
        if self.artifact_store == "azure" and not (
            self.azure_storage_connection_string and self.azure_storage_connection_string.get_secret_value()
        ):
            raise ValueError(
                "artifact_store=azure needs AIOT_AZURE_STORAGE_CONNECTION_STRING (the storage account's "
                "connection string)"
            )
        if self.nats_port is not None and self.nats_port == self.mqtt_port:
            raise ValueError(f"nats_port and mqtt_port are both {self.nats_port}: give them different ports")
        return self

    @property
    def effective_database_url(self) -> str:
        """The database URL in force: explicit, or SQLite inside the data directory."""
        if self.database_url:
            url = self.database_url
            if url.startswith("postgresql://"):
                # psycopg 3 is the driver we ship; plain postgresql:// would ask for psycopg2.
                url = "postgresql+psycopg://" + url[len("postgresql://") :]
            return url
        return f"sqlite:///{self.data_dir / 'aiot.db'}"

    @property
    def secure_cookies(self) -> bool:
        """Whether the platform's cookies are marked Secure: as set, else when the public URL is https."""
        if self.cookie_secure is not None:
            return self.cookie_secure
        return bool(self.public_url and self.public_url.lower().startswith("https://"))

    @property
    def embedded_nats(self) -> bool:
        """True when the platform must run its own nats-server (no external URL given)."""
        return not self.nats_url

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        toml_path = _toml_file()
        if toml_path is not None and toml_path.exists():
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=toml_path))
        return tuple(sources)


def load_settings(**overrides: Any) -> Settings:
    """Read settings now (environment and TOML are read at call time, not import time)."""
    return Settings(**overrides)
