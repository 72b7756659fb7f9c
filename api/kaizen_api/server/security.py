"""Credentials: argon2 password hashes, RS256 JWTs with rotating keys (JWKS), and API
keys ``ksk_<prefix>_<secret>`` of which only a SHA-256 of the secret is stored."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import threading
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated, Any

import jwt
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from pydantic import Field

_HASHER = PasswordHasher()

# One rule for the schema and the check (a looser one than RFC 5322 on purpose: the
# address is an identifier here; mail is never sent to it by the facade).
Email = Annotated[
    str,
    Field(pattern=r"^[^@\s]+@[^@\s]+\.[^@\s]+$", max_length=320, examples=["jane@example.com"]),
]
API_KEY_PREFIX = "ksk"


def hash_password(password: str) -> str:
    return _HASHER.hash(password)


class HashingBusy(Exception):
    """Every password-hash slot stayed taken for the whole wait."""


class PasswordWork:
    """Argon2 hashes and verifications, at most ``concurrency`` at once: each takes
    the hasher's memory (64 MiB by default), so unthrottled simultaneous logins and
    registrations could exceed the pod's memory. A caller waits up to ``wait`` seconds
    for a slot, then gets HashingBusy (answered 503 with Retry-After)."""

    def __init__(self, concurrency: int, wait: float) -> None:
        self.concurrency, self.wait = max(1, concurrency), max(0.0, wait)
        self._slots = threading.BoundedSemaphore(self.concurrency)
        self._dummy: str | None = None

    def _slot(self) -> None:
        taken = (
            self._slots.acquire(timeout=self.wait)
            if self.wait
            else self._slots.acquire(blocking=False)
        )
        if not taken:
            raise HashingBusy

    def hash(self, password: str) -> str:
        self._slot()
        try:
            return hash_password(password)
        finally:
            self._slots.release()

    def verify(self, password_hash: str | None, password: str) -> bool:
        """Whether ``password`` matches; with no hash (an unknown user) the same work
        is done against a stand-in, so the answer's timing does not tell."""
        if password_hash is None and self._dummy is None:
            self._dummy = self.hash(secrets.token_urlsafe(16))
        self._slot()
        try:
            ok = verify_password(password_hash or self._dummy or "", password)
        finally:
            self._slots.release()
        return ok and password_hash is not None


def verify_password(password_hash: str, password: str) -> bool:
    try:
        return _HASHER.verify(password_hash, password)
    except (VerificationError, InvalidHashError):
        return False


def sha256_hex(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


@dataclass(frozen=True)
class NewApiKey:
    """A fresh key: ``token`` is shown once; ``prefix`` and ``secret_hash`` are stored."""

    token: str
    prefix: str
    secret_hash: str


def new_api_key() -> NewApiKey:
    prefix = secrets.token_hex(6)
    secret = secrets.token_urlsafe(32)
    return NewApiKey(f"{API_KEY_PREFIX}_{prefix}_{secret}", prefix, sha256_hex(secret))


def split_api_key(token: str) -> tuple[str, str] | None:
    """(prefix, secret) of a well-formed key, else None."""
    parts = token.split("_", 2)
    if len(parts) != 3 or parts[0] != API_KEY_PREFIX or not parts[1] or not parts[2]:
        return None
    return parts[1], parts[2]


def api_key_matches(secret: str, secret_hash: str) -> bool:
    return hmac.compare_digest(sha256_hex(secret), secret_hash)


class InvalidToken(Exception):
    """A JWT that is malformed, forged, expired or meant for someone else."""


def _kid(public: rsa.RSAPublicKey) -> str:
    der = public.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return hashlib.sha256(der).hexdigest()[:16]


def _b64(n: int) -> str:
    raw = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


class SigningKeys:
    """RSA keys: the newest signs, all verify (rotation = add a newer key file, remove
    the old one after the longest token lifetime)."""

    def __init__(self, keys: list[rsa.RSAPrivateKey]) -> None:
        if not keys:
            raise ValueError("at least one signing key is needed")
        self._keys = {_kid(k.public_key()): k for k in keys}
        self.current = _kid(keys[-1].public_key())

    @classmethod
    def load(cls, folder: Path | None) -> SigningKeys:
        """``*.pem`` in ``folder`` in name order (newest last); a fresh key without one."""
        if folder is None:
            return cls([rsa.generate_private_key(public_exponent=65537, key_size=2048)])
        keys = []
        for pem in sorted(folder.glob("*.pem")):
            key = serialization.load_pem_private_key(pem.read_bytes(), password=None)
            if not isinstance(key, rsa.RSAPrivateKey):
                raise ValueError(f"{pem} is not an RSA private key")
            keys.append(key)
        return cls(keys)

    def jwks(self) -> dict[str, Any]:
        """The public keys as a JSON Web Key Set."""
        out = []
        for kid, key in self._keys.items():
            numbers = key.public_key().public_numbers()
            out.append(
                {
                    "kty": "RSA",
                    "use": "sig",
                    "alg": "RS256",
                    "kid": kid,
                    "n": _b64(numbers.n),
                    "e": _b64(numbers.e),
                }
            )
        return {"keys": out}

    def sign(self, claims: dict[str, Any]) -> str:
        return jwt.encode(claims, self._keys[self.current], "RS256", headers={"kid": self.current})

    def verify(self, token: str, *, audience: str, issuer: str, kind: str) -> dict[str, Any]:
        """The claims of a valid token of type ``kind`` (access or refresh)."""
        try:
            header = jwt.get_unverified_header(token)
            key = self._keys.get(str(header.get("kid")))
            if key is None:
                raise InvalidToken("signed with an unknown key")
            claims: dict[str, Any] = jwt.decode(
                token,
                key.public_key(),
                algorithms=["RS256"],  # never "none", never HMAC with the public key
                audience=audience,
                issuer=issuer,
                options={"require": ["exp", "iat", "sub", "jti"]},
            )
        except jwt.PyJWTError as exc:
            raise InvalidToken(str(exc)) from exc
        if claims.get("typ") != kind:
            raise InvalidToken(f"not an {kind} token")
        return claims


def token_claims(
    subject: str, kind: str, ttl: int, *, issuer: str, audience: str, **extra: Any
) -> dict[str, Any]:
    now = datetime.now(UTC)
    return {
        "iss": issuer,
        "aud": audience,
        "sub": subject,
        "iat": now,
        "exp": now + timedelta(seconds=ttl),
        "jti": secrets.token_hex(16),
        "typ": kind,
        **extra,
    }


def dumps(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"))
