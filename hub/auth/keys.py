"""The hub's own signing keys: access tokens, and later the audit trail's signed checkpoints.

Kept as a private JWKS file in the data directory (created on first start, mode 0600 in a 0700
directory) or supplied by configuration (`HUB_SIGNING_KEYS_FILE`, e.g. mounted from a secret
store). The newest key signs; older keys stay for verification until retired, so rotation never
invalidates tokens already issued. RS256: verification costs ~0.04 ms, which keeps the per-request
token check cheap (ES384 would cost ~0.4 ms).
"""

from __future__ import annotations

import json
import os
import threading
import time
import uuid
from pathlib import Path
from typing import Any

from joserfc.jwk import KeySet, RSAKey

KEYS_FILE = "signing-keys.json"
ALG = "RS256"
_RELOAD_EVERY = 5.0  # seconds between checks for a rotated key file (other processes rotate too)


def _new_key() -> RSAKey:
    kid = f"hub-{time.strftime('%Y%m%d')}-{uuid.uuid4().hex[:8]}"
    return RSAKey.generate_key(3072, parameters={"kid": kid, "use": "sig", "alg": ALG})


def _write_private(path: Path, keys: list[dict[str, Any]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    os.chmod(path.parent, 0o700)
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        json.dump({"keys": keys}, fh)
    os.replace(tmp, path)


class SigningKeys:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._mtime = -1.0
        self._checked = 0.0
        self._keys: list[RSAKey] = []
        self._load(create=True)

    @classmethod
    def for_data_dir(cls, data_dir: Path) -> SigningKeys:
        configured = os.environ.get("HUB_SIGNING_KEYS_FILE")
        return cls(Path(configured) if configured else data_dir / "keys" / KEYS_FILE)

    def _load(self, create: bool = False) -> None:
        with self._lock:
            if not self.path.exists():
                if not create:
                    raise FileNotFoundError(self.path)
                _write_private(self.path, [_new_key().as_dict(private=True)])
            mtime = self.path.stat().st_mtime
            if mtime == self._mtime:
                return
            data = json.loads(self.path.read_text())
            keys = [RSAKey.import_key(k) for k in data.get("keys", [])]
            if not keys:
                raise ValueError(f"{self.path} holds no signing keys")
            self._keys, self._mtime = keys, mtime

    def _fresh(self) -> list[RSAKey]:
        now = time.monotonic()
        if now - self._checked > _RELOAD_EVERY:
            self._checked = now
            self._load()
        return self._keys

    @property
    def signing(self) -> RSAKey:
        """The newest key (the last one in the file)."""
        return self._fresh()[-1]

    @property
    def keyset(self) -> KeySet:
        return KeySet(list(self._fresh()))

    def knows(self, kid: str) -> bool:
        """Whether the key with this kid still verifies (it has not been retired)."""
        return any(k.kid == kid for k in self._fresh())

    def public_jwks(self) -> dict[str, Any]:
        return {"keys": [k.as_dict(private=False) for k in self._fresh()]}

    def rotate(self) -> str:
        """Add a new signing key; returns its kid. Old keys keep verifying until retired."""
        key = _new_key()
        current = json.loads(self.path.read_text())["keys"]
        _write_private(self.path, [*current, key.as_dict(private=True)])
        self._checked = 0.0
        self._load()
        return str(key.kid)

    def retire(self, kid: str) -> None:
        current = json.loads(self.path.read_text())["keys"]
        remaining = [k for k in current if k.get("kid") != kid]
        if len(remaining) == len(current):
            raise KeyError(kid)
        if not remaining:
            raise ValueError("cannot retire the only signing key; rotate first")
        _write_private(self.path, remaining)
        self._checked = 0.0
        self._load()
