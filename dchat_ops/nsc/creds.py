"""The creds file: a user JWT and its nkey seed in one text file, as nats clients read it.

:func:`format_creds` writes the exact layout Go's ``jwt.FormatUserConfig`` writes (LF only:
nats.py fails on CRLF).  :func:`parse_creds` reads that layout, a minimal one with only the two
blocks, and CRLF files, and refuses a file without a JWT or seed block with a clear message.

    >>> text = format_creds(user_jwt, user_seed)
    >>> parse_creds(text).jwt == user_jwt
    True
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from dchat_ops.errors import CredsError, NKeyError
from dchat_ops.nsc.keys import KeyPair

__all__ = ["Creds", "format_creds", "format_decorated_jwt", "format_decorated_seed", "parse_creds"]

_BANNER = (
    "************************* IMPORTANT *************************\n"
    "NKEY Seed printed below can be used to sign and prove identity.\n"
    "NKEYs are sensitive and should be treated as secrets.\n"
)
_STARS = "*************************************************************\n"

# A block: a "---...---" marker line, one token line, a closing "---...---" marker line.
_BLOCK = re.compile(r"-{3,}[^\n]*?-{3,}[ \t]*\n[ \t]*([A-Za-z0-9_.=\-]+)[ \t]*\n[ \t]*-{3,}[^\n]*?-{3,}")
_SEED_LINE = re.compile(r"^\s*(S[OAU][A-Z2-7]{56})\s*$", re.M)


def format_decorated_jwt(token: str, kind: str = "USER") -> str:
    kind = kind.upper()
    return f"-----BEGIN NATS {kind} JWT-----\n{token}\n------END NATS {kind} JWT------\n\n"


def format_decorated_seed(seed: str) -> str:
    kinds = {"SU": "USER", "SA": "ACCOUNT", "SO": "OPERATOR"}
    kind = kinds.get(seed[:2])
    if kind is None:
        raise CredsError("only operator, account and user seeds can be decorated")
    return _BANNER + f"\n-----BEGIN {kind} NKEY SEED-----\n{seed}\n------END {kind} NKEY SEED------\n\n" + _STARS


def format_creds(user_jwt: str, seed: str) -> str:
    """The standard creds text for a user JWT and its seed (a secret)."""
    if seed[:2] == "SU":  # the layout below, filled in at once (once per user in bulk issuance)
        return f"{_USER_JWT_BEGIN}{user_jwt}{_USER_JWT_END}{seed}{_USER_SEED_END}"
    return format_decorated_jwt(user_jwt, "USER") + format_decorated_seed(seed)


_USER_JWT_BEGIN, _USER_JWT_END = format_decorated_jwt("\0", "USER").split("\0")
_SEED_BEGIN, _USER_SEED_END = format_decorated_seed("SU\0").split("SU\0")
_USER_JWT_END += _SEED_BEGIN


@dataclass(frozen=True)
class Creds:
    """A parsed creds file.  ``seed`` is a secret; ``repr`` does not show it."""

    jwt: str
    seed: str

    def keypair(self) -> KeyPair:
        kp: KeyPair | None = self.__dict__.get("_keypair")  # made once: parse_creds checks the seed with it
        if kp is None:
            try:
                kp = KeyPair.from_seed(self.seed, "user")
            except NKeyError as exc:
                raise CredsError(f"creds seed: {exc}") from None
            object.__setattr__(self, "_keypair", kp)
        return kp

    def __repr__(self) -> str:
        return f"Creds(jwt={self.jwt[:16]}..., seed=<hidden>)"


def parse_creds(text: str | bytes) -> Creds:
    """Parse creds text (standard, minimal or CRLF).  Raises :class:`CredsError`."""
    if isinstance(text, bytes):
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError:
            raise CredsError("creds file is not UTF-8 text") from None
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    blocks = _BLOCK.findall(text)
    token = blocks[0] if blocks else ""
    if not token or token.count(".") != 2:
        raise CredsError(
            "creds file has no JWT block (-----BEGIN NATS USER JWT----- ... ------END NATS USER JWT------)"
        )
    seed = ""
    for candidate in blocks[1:]:
        if candidate.startswith("S"):
            seed = candidate
            break
    if not seed:
        m = _SEED_LINE.search(text)
        seed = m.group(1) if m else ""
    if not seed:
        raise CredsError(
            "creds file has no nkey seed block (-----BEGIN USER NKEY SEED----- ... ------END USER NKEY SEED------)"
        )
    creds = Creds(token, seed)
    creds.keypair()  # checks the seed is a well-formed user seed
    return creds
