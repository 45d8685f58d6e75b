"""Per-authority credentials for the views' HTTP API and web page.

A token looks like ``sfx.commune-69123.<secret>``: it names the authority it claims, and only the
scrypt hash of the whole token is stored (in a JSON file, ``view_credentials`` in settings), so the
file gives nothing away. Checking a token costs one scrypt of the claimed authority's hashes,
compared in constant time. An authority may hold several valid tokens at once (rotation without
downtime: ``issue`` a new one beside the old, hand it over, then ``revoke`` all but the newest). The
file is written atomically (a reader sees the old or the new file, never half of one).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import secrets
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..schemas.errors import ConfigError
from .authority import Authority, UnknownAuthority

SCRYPT = {"n": 2**14, "r": 8, "p": 1}
PREFIX = "sfx"
_NO_HASH = "scrypt$16384$8$AAAAAAAAAAAAAAAAAAAAAA==$AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="
"""Checked against when the claimed authority holds no token, so that costs the same as a wrong token."""


def _hash(token: str, salt: bytes, n: int, r: int, p: int) -> bytes:
    return hashlib.scrypt(token.encode(), salt=salt, n=n, r=r, p=p, dklen=32)


def hash_token(token: str) -> str:
    """``scrypt$n$r$p$salt$hash`` (base64) of a token."""
    salt = secrets.token_bytes(16)
    digest = _hash(token, salt, **SCRYPT)
    b64 = base64.b64encode
    return f"scrypt${SCRYPT['n']}${SCRYPT['r']}${SCRYPT['p']}${b64(salt).decode()}${b64(digest).decode()}"


def matches(token: str, stored: str) -> bool:
    """Whether ``token`` is the one ``stored`` is the hash of (constant-time comparison)."""
    try:
        _, n, r, p, salt, digest = stored.split("$")
        expected = base64.b64decode(digest)
        actual = _hash(token, base64.b64decode(salt), int(n), int(r), int(p))
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(actual, expected)


def new_token(authority: Authority) -> str:
    """A fresh random token for ``authority``."""
    return f"{PREFIX}.{authority.slug}.{secrets.token_urlsafe(24)}"


def claimed_authority(token: str) -> Authority | None:
    """The authority a token claims to be for (unverified), or None if it is not shaped like a token."""
    parts = token.split(".")
    if len(parts) != 3 or parts[0] != PREFIX:
        return None
    try:
        return Authority.parse(parts[1])
    except UnknownAuthority:
        return None


@dataclass(eq=False)  # compared and hashed by identity: a loaded file is a cache key of the API
class CredentialStore:
    """The hashed tokens of every authority, read from (and written to) a JSON file."""

    path: Path
    hashes: dict[str, list[str]]

    @classmethod
    def load(cls, path: Path) -> CredentialStore:
        """Read the file (an absent file holds no credential); a wrong file names the field and the rule."""
        if not path.exists():
            return cls(path, {})
        try:
            data: Any = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as exc:
            raise ConfigError(str(path), "(file)", f"must be a JSON object ({type(exc).__name__})") from exc
        if not isinstance(data, dict) or not isinstance(data.get("authorities", {}), dict):
            raise ConfigError(str(path), "authorities", "must be an object of authority → list of hashes")
        hashes: dict[str, list[str]] = {}
        for name, stored in data.get("authorities", {}).items():
            try:
                authority = Authority.parse(name)
            except UnknownAuthority as exc:
                raise ConfigError(str(path), f"authorities.{name}", "must be level:code") from exc
            if not isinstance(stored, list) or not all(isinstance(h, str) and h.startswith("scrypt$") for h in stored):
                raise ConfigError(str(path), f"authorities.{name}", "must be a list of scrypt$… hashes")
            hashes[str(authority)] = stored
        return cls(path, hashes)

    def save(self) -> None:
        """Write the file atomically, readable by its owner only from the start."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        handle, temporary = tempfile.mkstemp(dir=self.path.parent, prefix=f".{self.path.name}.")  # mode 0600
        try:
            with os.fdopen(handle, "w", encoding="utf-8") as out:
                json.dump({"authorities": self.hashes}, out, indent=2)
                out.flush()
                os.fsync(out.fileno())
            os.replace(temporary, self.path)
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise

    def issue(self, authority: Authority, replace: bool = False) -> str:
        """A new token for ``authority`` (kept beside the existing ones unless ``replace``); saved."""
        token = new_token(authority)
        kept = [] if replace else self.hashes.get(str(authority), [])
        self.hashes[str(authority)] = [*kept, hash_token(token)]
        self.save()
        return token

    def revoke(self, authority: Authority, keep_newest: bool = True) -> int:
        """Revoke ``authority``'s tokens but the newest (the end of a rotation), or all; saved.
        Returns how many were revoked."""
        stored = self.hashes.get(str(authority), [])
        kept = stored[-1:] if keep_newest else []
        if kept:
            self.hashes[str(authority)] = kept
        else:
            self.hashes.pop(str(authority), None)
        self.save()
        return len(stored) - len(kept)

    def verify(self, token: str) -> Authority | None:
        """The authority a token belongs to, or None if it is not a valid token."""
        claimed = claimed_authority(token)
        if claimed is None:
            return None
        valid = [matches(token, stored) for stored in self.hashes.get(str(claimed)) or [_NO_HASH]]
        return claimed if any(valid) else None

    def authorities(self) -> list[Authority]:
        """Every authority holding a credential."""
        return [Authority.parse(name) for name in sorted(self.hashes)]
