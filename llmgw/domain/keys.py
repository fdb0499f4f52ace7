"""API keys of the gateway: their format, how their secret is kept (a keyed hash, never the secret), and
what a key allows.

A key reads `sk-llmgw-<public id>-<secret>`: the public id (12 lower-case letters and digits) names the key
in logs, records and listings and is what the store is searched by; the secret (43 URL-safe characters,
32 random bytes) is shown once, at creation, and only its HMAC-SHA256 under the server's pepper is kept.
Secrets are compared with `hmac.compare_digest`, in time that does not depend on how much of them matches.
"""

from __future__ import annotations

import enum
import fnmatch
import hashlib
import hmac
import re
import secrets
import string
from collections.abc import Mapping
from dataclasses import dataclass, field, replace

from llmgw.domain.limits import NO_LIMITS, Limits

PREFIX = "sk-llmgw-"
PUBLIC_ID_LENGTH = 12
SECRET_BYTES = 32
_SECRET_LENGTH = 43  # base64url of 32 bytes, unpadded
_PUBLIC_ALPHABET = string.ascii_lowercase + string.digits
_KEY = re.compile(
    rf"{re.escape(PREFIX)}([a-z0-9]{{{PUBLIC_ID_LENGTH}}})-([A-Za-z0-9_-]{{{_SECRET_LENGTH}}})", re.ASCII
)
#: A rotated key's old secret is accepted this long after the rotation, unless told otherwise.
ROTATION_GRACE_SECONDS = 24 * 3600.0


class Scope(enum.Enum):
    INFERENCE = "inference"
    USAGE_READ = "usage:read"
    ADMIN = "admin"


@dataclass(frozen=True, slots=True)
class PresentedKey:
    """A key as a client presented it, split into its parts; the secret is never logged."""

    public_id: str
    secret: str = field(repr=False)


def mint_key() -> tuple[str, PresentedKey]:
    """A new key: the full text to show once, and its parts."""
    public_id = "".join(secrets.choice(_PUBLIC_ALPHABET) for _ in range(PUBLIC_ID_LENGTH))
    secret = secrets.token_urlsafe(SECRET_BYTES)
    return f"{PREFIX}{public_id}-{secret}", PresentedKey(public_id, secret)


def parse_key(text: str) -> PresentedKey | None:
    """The parts of a key of ours, or None for anything else (another kind of key, a malformed one)."""
    match = _KEY.fullmatch(text)
    return None if match is None else PresentedKey(match[1], match[2])


def hash_secret(secret: str, pepper: bytes) -> bytes:
    """What the store keeps of a secret: its HMAC-SHA256 under the server's pepper."""
    return hmac.digest(pepper, secret.encode(), hashlib.sha256)


@dataclass(frozen=True, slots=True, kw_only=True)
class ApiKey:
    """A key as stored: everything but its secret. Times are Unix seconds.

    `models` are glob patterns over gateway model ids (`gpt-4o*`, `dashscope/*`); none means every model.
    After a rotation `previous_hash` is the old secret's, accepted until `previous_valid_until`.
    `limits` are the key's own; its team's apply as well.
    """

    public_id: str
    name: str
    secret_hash: bytes = field(repr=False)
    scopes: frozenset[Scope] = frozenset({Scope.INFERENCE})
    models: tuple[str, ...] = ()
    team_id: str = ""
    expires_at: float | None = None
    disabled: bool = False
    metadata: Mapping[str, str] = field(default_factory=dict)
    created_at: float = 0.0
    last_used_at: float | None = None
    previous_hash: bytes | None = field(default=None, repr=False)
    previous_valid_until: float | None = None
    limits: Limits = NO_LIMITS

    def matches(self, secret: str, pepper: bytes, now: float) -> bool:
        """Whether `secret` is this key's (or, within the rotation grace, its previous one)."""
        current, previous = self.matched(secret, pepper)
        return current or (previous and self.in_grace(now))

    def matched(self, secret: str, pepper: bytes) -> tuple[bool, bool]:
        """Whether `secret` is this key's current secret, and whether it is its previous one, grace aside.
        Both hashes are compared in constant time, whatever the first comparison says."""
        presented = hash_secret(secret, pepper)
        current = hmac.compare_digest(presented, self.secret_hash)
        previous = self.previous_hash is not None and hmac.compare_digest(presented, self.previous_hash)
        return current, previous

    def in_grace(self, now: float) -> bool:
        """Whether a rotated key's previous secret still works."""
        return self.previous_valid_until is not None and now < self.previous_valid_until

    def usable(self, now: float) -> bool:
        """Neither disabled nor expired."""
        return not self.disabled and (self.expires_at is None or now < self.expires_at)

    def can(self, scope: Scope) -> bool:
        return scope in self.scopes or Scope.ADMIN in self.scopes

    def may_use(self, model_id: str) -> bool:
        """Whether the key may call `model_id`: no patterns, or one matching it (case-sensitive)."""
        return not self.models or any(fnmatch.fnmatchcase(model_id, pattern) for pattern in self.models)

    def rotated(self, new_hash: bytes, now: float, grace: float) -> ApiKey:
        """This key with a new secret; the old one stays accepted for `grace` seconds (0: not at all)."""
        return replace(
            self,
            secret_hash=new_hash,
            previous_hash=self.secret_hash if grace > 0 else None,
            previous_valid_until=now + grace if grace > 0 else None,
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class Team:
    """A group of keys: their records and their spending roll up to it; its `limits` hold for all its keys
    together."""

    id: str
    name: str
    metadata: Mapping[str, str] = field(default_factory=dict)
    created_at: float = 0.0
    limits: Limits = NO_LIMITS


def new_team_id() -> str:
    return "team-" + "".join(secrets.choice(_PUBLIC_ALPHABET) for _ in range(PUBLIC_ID_LENGTH))


@dataclass(frozen=True, slots=True, kw_only=True)
class AuditEntry:
    """One admin action: who (`actor`: a key's public id, `cli`, or `config` for `auth.admin_key`), did
    what (`action`, e.g. `key.create`), to which object (`target`: a key's public id or a team id), when
    (Unix seconds), with what (`details`: the fields given, never a secret)."""

    id: str
    at: float
    actor: str
    action: str
    target: str
    details: Mapping[str, object] = field(default_factory=dict)


_last_audit = (0, 0)  # the milliseconds and the random part of this process's last audit id


def new_audit_id(now: float) -> str:
    """`aud-` + 12 hex digits of Unix milliseconds + 8 random: later entries sort later. Within one
    process even in the same millisecond: there the next id takes the last one's time and its random
    part plus one (it starts below 2^31, so it has room)."""
    global _last_audit  # noqa: PLW0603  (the ordering is process state by design)
    millis = int(now * 1000)
    last_millis, last_part = _last_audit
    _last_audit = (millis, secrets.randbits(31)) if millis > last_millis else (last_millis, last_part + 1)
    return f"aud-{_last_audit[0]:012x}{_last_audit[1]:08x}"
