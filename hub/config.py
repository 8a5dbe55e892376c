"""Configuration: defaults for the embedded set-up, overridable by environment or command line."""

from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from pathlib import Path


def _int_env(name: str, default: int) -> int:
    value = os.environ.get(name)
    return int(value) if value else default


@dataclass(frozen=True)
class Settings:
    data_dir: Path = field(default_factory=lambda: Path(os.environ.get("HUB_DATA_DIR", "hub-data")))
    database_url: str = ""  # empty: SQLite in data_dir
    base_url: str | None = field(default_factory=lambda: os.environ.get("HUB_BASE_URL"))  # behind a proxy
    max_body_bytes: int = field(default_factory=lambda: _int_env("HUB_MAX_BODY_BYTES", 64 * 1024 * 1024))
    default_page_size: int = 50
    max_page_size: int = 1000
    # Access-token lifetimes in seconds: at most 5 minutes for systems, 15 for patients' apps.
    system_token_lifetime: int = field(default_factory=lambda: min(_int_env("HUB_SYSTEM_TOKEN_SECONDS", 300), 300))
    patient_token_lifetime: int = field(default_factory=lambda: min(_int_env("HUB_PATIENT_TOKEN_SECONDS", 900), 900))
    refresh_token_lifetime: int = field(default_factory=lambda: _int_env("HUB_REFRESH_TOKEN_SECONDS", 8 * 3600))
    # AVG erasure is refused while care providers must keep the data (WGBO: 20 years after the last change).
    retention_years: int = field(default_factory=lambda: _int_env("HUB_RETENTION_YEARS", 20))
    # Client secrets are for development set-ups only; production clients sign a JWT assertion.
    allow_development_secrets: bool = field(default_factory=lambda: os.environ.get("HUB_DEVELOPMENT") == "1")
    # Profile validation on write: default (enforce the hub's own profiles, warn for others) | off | warn | enforce.
    profile_validation: str = field(default_factory=lambda: os.environ.get("HUB_PROFILE_VALIDATION", "default"))
    # Who logs patients in for PGO apps (hub/auth/identity.py): empty = the development provider when
    # HUB_DEVELOPMENT=1, otherwise none (patient login refused until a real one, DigiD, is configured).
    identity_provider: str = field(default_factory=lambda: os.environ.get("HUB_IDENTITY_PROVIDER", ""))
    # Threads per server process running requests (they hold the GIL in turn): 32 clients on 40
    # threads cost ~20 % more CPU per read than on 4-8; over HTTP 4 gave 2,155-2,322 reads/s against
    # 1,922-1,981 with 8 (bench/bench_read.py, 2 workers). More for slow back ends (remote PostgreSQL).
    request_threads: int = field(default_factory=lambda: _int_env("HUB_REQUEST_THREADS", 4))

    def __post_init__(self) -> None:
        if not self.database_url:
            url = os.environ.get("HUB_DATABASE_URL") or f"sqlite:///{self.data_dir / 'hub.db'}"
            object.__setattr__(self, "database_url", url)

    def with_(self, **changes: object) -> Settings:
        return replace(self, **changes)  # type: ignore[arg-type]
