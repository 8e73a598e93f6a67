"""Join tokens: ``base64url(JSON claims) "." base64url(HMAC-SHA256)``, naming one room.

Claims: ``room`` (required), ``exp`` (Unix seconds), optional ``name``. Minted by
``percepnet-relay token`` and checked on every join when a token secret is configured.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import time
from dataclasses import dataclass


class TokenError(ValueError):
    """The token is missing, malformed, forged, expired or for another room."""


@dataclass(frozen=True)
class TokenClaims:
    """What a valid token grants."""

    room: str
    expires: int
    name: str | None = None


def _b64encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _b64decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _signature(secret: str, payload: str) -> str:
    digest = hmac.new(secret.encode(), payload.encode("ascii"), hashlib.sha256).digest()
    return _b64encode(digest)


def same_secret(given: str | None, expected: str) -> bool:
    """Whether a client's ``given`` secret is ``expected``, compared as bytes in constant time;
    never true for a non-ASCII or empty one (a secret is ASCII: a token, a key)."""
    if not given or not expected or not given.isascii():
        return False
    return hmac.compare_digest(given.encode("ascii"), expected.encode())


def mint_token(
    secret: str,
    room: str,
    ttl_seconds: float = 3600.0,
    name: str | None = None,
    now: float | None = None,
) -> str:
    """A token that lets its holder join ``room`` for ``ttl_seconds``."""
    if not secret:
        raise ValueError("the token secret is empty")
    issued = time.time() if now is None else now
    claims: dict[str, object] = {"room": room, "exp": int(issued + ttl_seconds)}
    if name:
        claims["name"] = name
    payload = _b64encode(json.dumps(claims, separators=(",", ":")).encode())
    return f"{payload}.{_signature(secret, payload)}"


def verify_token(
    secret: str, token: str | None, room: str, now: float | None = None
) -> TokenClaims:
    """Claims of a valid token for ``room``; :class:`TokenError` saying why otherwise."""
    if not secret:  # an empty key signs nothing: anyone could mint with it
        raise TokenError("the relay has no token secret")
    if not token:
        raise TokenError("a token is required to join")
    payload, dot, signature = token.partition(".")
    if not dot or not payload or not signature or not token.isascii():
        raise TokenError("malformed token")
    if not same_secret(signature, _signature(secret, payload)):
        raise TokenError("token signature is invalid")
    try:
        claims = json.loads(_b64decode(payload))
    except (binascii.Error, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise TokenError("malformed token claims") from error
    if not isinstance(claims, dict):
        raise TokenError("malformed token claims")
    token_room, expires, name = claims.get("room"), claims.get("exp"), claims.get("name")
    if not isinstance(token_room, str) or not isinstance(expires, int):
        raise TokenError("token claims lack a room or an expiry")
    if token_room != room:
        raise TokenError("token is for another room")
    if expires < (time.time() if now is None else now):
        raise TokenError("token has expired")
    return TokenClaims(
        room=token_room, expires=expires, name=name if isinstance(name, str) else None
    )
