"""The one error tree of dchat-ops.

Every expected failure is a :class:`DchatOpsError`; the CLI turns it into a one-line
message and a non-zero exit code, never a traceback.  Messages never contain secrets: anything
in a message that looks like an nkey seed (a value typed in the wrong place, a ``${VAR}`` that
holds one) is replaced by ``S…(a seed, not shown)`` when the error is made, a control character (a
line break in a name, say) is shown escaped so the message stays one line, and a quoted value longer
than 60 characters is cut to its first 60 and its length.

    DchatOpsError
    ├── NKeyError            wrong kind, bad checksum, malformed seed or public key
    ├── JWTError             malformed token, bad signature, wrong claim type
    │   └── ChainError       a link of operator -> account -> user does not hold
    ├── CredsError           a creds file without a JWT or seed block
    ├── BundleError          a bundle that cannot be opened: wrong secret, damaged, truncated
    ├── StoreError           missing store, unknown entity, invalid name
    │   ├── ExistsError      refusing to overwrite without force
    │   ├── FieldError       a user or role field the server would refuse (field, index, reason)
    │   ├── KeyInUseError    removing a signing key that still signs users or accounts (rotate it instead)
    │   └── StoreBehindError running servers hold a newer account JWT than the store (pull first)
    ├── ConfigError          a server config that would not start or would misbehave
    │   ├── TLSError         a certificate, key or TLS setting that is missing or unusable
    │   └── SpecError        a provisioning spec that is not valid (file, line, field)
    ├── ServerError          a nats-server process that failed to start, stop or answer
    ├── ApplyError           a step of a permission change failed; everything was put back
    ├── ChatError            a chat operation that cannot be done
    └── EnrollError          an enrollment file refused: changed, another operator, replayed, another device

All of them are importable from ``dchat_ops``.

Catch the base class, show the type and the message:

    >>> from dchat_ops import DchatOpsError, KeyPair
    >>> try:
    ...     KeyPair.from_seed("SUxyz")
    ... except DchatOpsError as err:
    ...     print(f"{type(err).__name__}: {err}")
    NKeyError: not an nkey seed: expected 58 characters starting with S
"""

from __future__ import annotations

import re

# the error classes (tests/test_public_api.py holds this list to them); SEED_PATTERN, scrub_seeds, cut and
# clean_message are importable from here too
__all__ = [
    "ApplyError",
    "BundleError",
    "ChainError",
    "ChatError",
    "ConfigError",
    "CredsError",
    "DchatOpsError",
    "EnrollError",
    "ExistsError",
    "FieldError",
    "JWTError",
    "KeyInUseError",
    "NKeyError",
    "ServerError",
    "SpecError",
    "StoreBehindError",
    "StoreError",
    "TLSError",
]

# An encoded nkey seed: "S", the kind letter (operator, account, user, server, cluster, curve; P for a
# private key), then base32 (A-Z, 2-7): 58 characters in all (see dchat_ops.nsc.keys).  A longer run of
# base32 after such a start is taken whole: a seed with a stray character is still a secret.
SEED_PATTERN = re.compile(r"S[OAUNCXP][A-Z2-7]{56,}")
SEED_SHOWN_AS = "S…(a seed, not shown)"


def scrub_seeds(text: str) -> str:
    """``text`` with everything that looks like an nkey seed replaced by ``S…(a seed, not shown)``."""
    return SEED_PATTERN.sub(SEED_SHOWN_AS, text)


# The characters of a quoted value a message shows at most.
MAX_SHOWN = 60


def cut(text: str, limit: int = MAX_SHOWN) -> str:
    """``text``, or its first ``limit`` characters and how long it was."""
    return text if len(text) <= limit else f"{text[:limit]}…({len(text)} characters)"


# A value quoted in a message (as ``{value!r}`` or click's ``'value'`` write it): a quote that no letter or
# digit precedes, up to the same quote that none follows ("the bundle's content" holds no quoted value).
_QUOTED = re.compile(r"""(?<![\w])(['"])([^\n]*?)\1(?![\w])""")


def _cut_quoted(match: re.Match[str]) -> str:
    quote, value = match.group(1), match.group(2)
    if len(value) <= MAX_SHOWN or value.startswith("dchat-ops "):  # a command to run is shown whole
        return match.group(0)
    return f"{quote}{cut(value)}{quote}"


# control characters (line breaks first of all) that a message shows escaped, so that it stays one line
_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f\x85\u2028\u2029]")


def _escape_control(match: re.Match[str]) -> str:
    return repr(match.group(0))[1:-1]


def clean_message(text: str) -> str:
    """``text`` fit to be shown: no seed (see :func:`scrub_seeds`), one line (control characters shown
    escaped, as ``\\n``), and every long quoted value cut short."""
    text = _CONTROL.sub(_escape_control, scrub_seeds(text))
    return _QUOTED.sub(_cut_quoted, text) if len(text) > MAX_SHOWN else text


class DchatOpsError(Exception):
    """Base of every expected failure.  ``str(err)`` is a user-facing one-line message, never holding a seed."""

    exit_code = 1

    def __init__(self, *args: object) -> None:
        super().__init__(*(clean_message(a) if isinstance(a, str) else a for a in args))

    def __str__(self) -> str:
        return clean_message(super().__str__())


class NKeyError(DchatOpsError):
    """A seed or public key that is malformed or of the wrong kind."""


class JWTError(DchatOpsError):
    """A JWT that cannot be decoded, is not signed by its issuer, or is not the expected type."""


class ChainError(JWTError):
    """A link in the operator -> account -> user trust chain does not hold.

    ``link`` names the failing link (``"operator"``, ``"account"``, ``"user"``) and
    ``reason`` is a short machine-readable code such as ``"expired"`` or ``"untrusted-issuer"``.
    """

    def __init__(self, link: str, reason: str, message: str):
        super().__init__(f"{link}: {message}")
        self.link = link
        self.reason = reason


class CredsError(DchatOpsError):
    """A creds file that cannot be parsed."""


class StoreError(DchatOpsError):
    """A store that is missing, inconsistent, or asked for an entity it does not hold."""


class ExistsError(StoreError):
    """Refusing to overwrite an existing key, creds or JWT without ``force``."""


class FieldError(StoreError):
    """A user or role field the server would refuse.

    ``field`` is the field's name as specs and the CLI spell it, ``index`` the item of a list (or
    None), ``reason`` the message without the field: ``str(err)`` is ``"<field>[<index>]: <reason>"``
    (or ``message`` when given).  A value refused at the door: the CLI exits with 2, as for any bad value.
    """

    exit_code = 2

    def __init__(self, field: str, reason: str, index: int | None = None, *, message: str | None = None):
        self.field = clean_message(field)
        self.index = index
        self.reason = clean_message(reason)
        super().__init__(message if message is not None else f"{self.where}: {self.reason}")

    @property
    def where(self) -> str:
        return self.field if self.index is None else f"{self.field}[{self.index}]"


class KeyInUseError(StoreError):
    """Removing a signing key that still signs users (an account key) or accounts (an operator key): their
    JWTs would be refused.  ``dchat-ops rotate`` replaces such a key without that."""


class StoreBehindError(StoreError):
    """Running servers hold a newer JWT of an account than the store: a change made on the older one
    would undo what the newer one holds (a revocation made from another home, say).  ``behind`` lists
    the accounts and servers; ``dchat-ops pull --update`` brings the store up to date."""

    def __init__(self, message: str, *, behind: list[dict] | None = None):
        super().__init__(message)
        self.behind = behind or []


class ConfigError(DchatOpsError):
    """A server or node configuration that fails validation."""


class TLSError(ConfigError):
    """A certificate, key or TLS setting that is missing, invalid or unusable."""


class SpecError(ConfigError):
    """A spec that is not valid: the message names the file, the line and the field."""


class BundleError(DchatOpsError):
    """A bundle that cannot be opened: wrong passphrase or key, damaged, truncated, or not a bundle."""


class ServerError(DchatOpsError):
    """A nats-server process that failed to start, answer or stop."""


class ApplyError(DchatOpsError):
    """A step of applying a change failed; everything was put back.  ``node`` and ``step`` say where."""

    def __init__(self, message: str, *, node: str = "", step: str = ""):
        super().__init__(message)
        self.node = node
        self.step = step


class ChatError(DchatOpsError):
    """A chat operation that cannot be done (unknown friend, not a group member, ...)."""


class EnrollError(DchatOpsError):
    """An enrollment request, response or grant request that is refused: changed, signed by another key or
    operator, replayed, or meant for another device.  Nothing was written."""
