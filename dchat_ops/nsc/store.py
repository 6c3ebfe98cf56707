"""The on-disk store: nsc's layout under one home folder, with atomic, private writes.

    <home>/
      context.json                                   current operator and account
      stores/<operator>/.nsc                         nsc's store marker
      stores/<operator>/<operator>.jwt
      stores/<operator>/accounts/<account>/<account>.jwt
      stores/<operator>/accounts/<account>/users/<user>.jwt
      keys/keys/<K>/<XY>/<PUBKEY>.nk                 seeds, sharded by kind letter and pubkey[1:3]
      keys/creds/<operator>/<account>/<user>.creds
      keys/.gitignore                                 keeps seeds and creds out of git

nsc itself reads this layout (point ``NSC_HOME``'s store dir at ``<home>/stores`` and
``NKEYS_PATH`` at ``<home>/keys``).  Seeds and creds are 0600 in 0700 folders; JWTs are public.
An existing key or creds file is never replaced without ``force``.

The home folder is, in order: the ``home`` argument, ``$DCHAT_OPS_HOME``,
``$XDG_DATA_HOME/dchat-ops``, ``~/.local/share/dchat-ops``.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from dchat_ops._fs import atomic_write, ensure_dir
from dchat_ops.errors import JWTError, NKeyError, StoreError
from dchat_ops.nsc.claims import AccountClaims, Claims, OperatorClaims, UserClaims
from dchat_ops.nsc.jwt import Clock, decode
from dchat_ops.nsc.keys import KeyPair, kind_of_public

__all__ = ["Entity", "Store", "check_name", "default_home"]

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}$")
_KIND_DIR = {"operator": "O", "account": "A", "user": "U", "server": "N", "cluster": "C", "curve": "X"}

# The keystore root's .gitignore, as nsc writes it.
_GITIGNORE = "# ignore all nk files \n**/*.nk\n\n# ignore all creds files\n**/*.creds\n"


def default_home() -> Path:
    env = os.environ.get("DCHAT_OPS_HOME")
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_DATA_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".local" / "share"
    return base / "dchat-ops"


def check_name(name: str, what: str = "name") -> str:
    """Refuse names that are empty, too long, or could escape the store (``/``, ``..``, spaces)."""
    if not isinstance(name, str) or not _NAME.match(name):
        raise StoreError(
            f"invalid {what} {name!r}: use 1-64 letters, digits, '.', '_', '-' or '@', starting with a letter or digit"
        )
    return name


@dataclass
class Entity:
    """An operator, account or user as held in the store: its name, token and decoded claims."""

    kind: str
    name: str
    token: str
    claims: Claims
    path: Path

    @property
    def public_key(self) -> str:
        return self.claims.subject


class Store:
    """An nsc-compatible store under ``home``.  ``clock`` (Unix seconds) is used for ``iat`` / expiry."""

    def __init__(self, home: Optional[os.PathLike | str] = None, *, clock: Optional[Clock] = None):
        self.home = Path(home).expanduser() if home else default_home()
        self.clock = clock
        self._key_cache: dict[str, KeyPair] = {}
        self._decoded: dict[str, Claims] = {}  # token -> verified claims
        self._keystore_ready = False

    # layout ---------------------------------------------------------------------------------------
    @property
    def stores_dir(self) -> Path:
        return self.home / "stores"

    @property
    def keys_root(self) -> Path:
        return self.home / "keys"

    @property
    def keys_dir(self) -> Path:
        return self.keys_root / "keys"

    @property
    def creds_dir(self) -> Path:
        return self.keys_root / "creds"

    @property
    def nodes_dir(self) -> Path:
        return self.home / "nodes"

    def operator_dir(self, operator: str) -> Path:
        return self.stores_dir / check_name(operator, "operator name")

    def operator_jwt_path(self, operator: str) -> Path:
        return self.operator_dir(operator) / f"{operator}.jwt"

    def account_dir(self, operator: str, account: str) -> Path:
        return self.operator_dir(operator) / "accounts" / check_name(account, "account name")

    def account_jwt_path(self, operator: str, account: str) -> Path:
        return self.account_dir(operator, account) / f"{account}.jwt"

    def user_jwt_path(self, operator: str, account: str, user: str) -> Path:
        return self.account_dir(operator, account) / "users" / f"{check_name(user, 'user name')}.jwt"

    def creds_path(self, operator: str, account: str, user: str) -> Path:
        check_name(operator, "operator name"), check_name(account, "account name"), check_name(user, "user name")
        return self.creds_dir / operator / account / f"{user}.creds"

    def key_path(self, public_key: str) -> Path:
        kind = kind_of_public(public_key)
        return self.keys_dir / _KIND_DIR[kind] / public_key[1:3] / f"{public_key}.nk"

    # context -------------------------------------------------------------------------------------
    @property
    def context_path(self) -> Path:
        return self.home / "context.json"

    def context(self) -> dict:
        try:
            data = json.loads(self.context_path.read_text())
            return data if isinstance(data, dict) else {}
        except (FileNotFoundError, ValueError):
            return {}

    def set_context(self, **values: str) -> None:
        ctx = self.context()
        ctx.update({k: v for k, v in values.items() if v})
        atomic_write(self.context_path, json.dumps(ctx, indent=2, sort_keys=True) + "\n")

    def exists(self) -> bool:
        return bool(self.operator_names())

    def require(self) -> None:
        if not self.exists():
            raise StoreError(f"no store at {self.home}: run 'dchat-ops init' first (or pass --home)")

    def operator_names(self) -> list[str]:
        if not self.stores_dir.is_dir():
            return []
        return sorted(p.name for p in self.stores_dir.iterdir() if (p / f"{p.name}.jwt").is_file())

    def current_operator(self) -> str:
        names = self.operator_names()
        if not names:
            self.require()
        ctx = self.context().get("operator")
        if ctx in names:
            return ctx
        if len(names) == 1:
            return names[0]
        raise StoreError(f"the store holds several operators ({', '.join(names)}); choose one with --operator")

    def default_account(self) -> str:
        """The context's account, else the only non-system account."""
        op = self.current_operator()
        ctx = self.context().get("account")
        names = self.account_names(op)
        if ctx in names:
            return ctx
        sys_key = self.operator(op).claims.system_account
        apps = [n for n in names if self.account(n, op).public_key != sys_key]
        if len(apps) == 1:
            return apps[0]
        raise StoreError("choose an account with --account")

    # keys ----------------------------------------------------------------------------------------
    def save_key(self, kp: KeyPair, *, force: bool = False) -> Path:
        """Keep a seed in the keystore (0600).  Saving the same seed again is a no-op."""
        if not self._keystore_ready:
            self._ensure_keystore()
        path = self.key_path(kp.public_key)
        atomic_write(path, kp.seed, private=True, force=force)
        self._key_cache[kp.public_key] = kp
        return path

    def save_seed(self, public_key: str, seed: str, *, force: bool = False) -> Path:
        """Keep a seed whose public key is already known (bulk paths: no key derivation).  The caller vouches
        that ``seed`` belongs to ``public_key``."""
        path = self.key_path(public_key)
        if not self._keystore_ready:
            self._ensure_keystore()
        atomic_write(path, seed, private=True, force=force)
        return path

    def has_key(self, public_key: str) -> bool:
        return public_key in self._key_cache or self.key_path(public_key).is_file()

    def load_key(self, public_key: str) -> KeyPair:
        """The key pair for ``public_key`` from the keystore; StoreError when it is not held."""
        kp = self._key_cache.get(public_key)
        if kp is not None:
            return kp
        path = self.key_path(public_key)
        try:
            text = path.read_text()
        except FileNotFoundError:
            raise StoreError(f"the keystore has no seed for {public_key}") from None
        try:
            kp = KeyPair.from_seed(text.strip(), kind_of_public(public_key))
        except NKeyError as exc:
            raise StoreError(f"keystore file {path}: {exc}") from None
        if kp.public_key != public_key:
            raise StoreError(f"keystore file {path} holds the seed of another key")
        self._key_cache[public_key] = kp
        return kp

    def _ensure_keystore(self) -> None:
        ensure_dir(self.keys_root, private=True)
        gi = self.keys_root / ".gitignore"
        if not gi.exists():
            atomic_write(gi, _GITIGNORE)
        self._keystore_ready = True

    # JWTs --------------------------------------------------------------------------------------
    def _read_entity(self, kind: str, name: str, path: Path, cls: type[Claims]) -> Entity:
        """Read and verify a JWT file (a token already verified by this store is not verified again)."""
        try:
            token = path.read_text().strip()
        except FileNotFoundError:
            raise StoreError(f"no {kind} named {name!r} in the store") from None
        cached = self._decoded.get(token)
        if cached is not None and isinstance(cached, cls):
            return Entity(kind, name, token, cached.copy(), path)
        try:
            claims = decode(token, cls)
        except JWTError as exc:
            raise StoreError(f"{path}: {exc}") from None
        if len(self._decoded) > 256:
            self._decoded.clear()
        self._decoded[token] = claims.copy()
        return Entity(kind, name, token, claims, path)

    def operator(self, name: Optional[str] = None) -> Entity:
        name = name or self.current_operator()
        return self._read_entity("operator", name, self.operator_jwt_path(name), OperatorClaims)

    def account(self, name: str, operator: Optional[str] = None) -> Entity:
        op = operator or self.current_operator()
        return self._read_entity("account", name, self.account_jwt_path(op, name), AccountClaims)

    def user(self, account: str, name: str, operator: Optional[str] = None) -> Entity:
        op = operator or self.current_operator()
        if not self.account_jwt_path(op, account).is_file():
            raise StoreError(f"no account named {account!r} in the store")
        return self._read_entity("user", name, self.user_jwt_path(op, account, name), UserClaims)

    def account_names(self, operator: Optional[str] = None) -> list[str]:
        op = operator or self.current_operator()
        d = self.operator_dir(op) / "accounts"
        if not d.is_dir():
            return []
        return sorted(p.name for p in d.iterdir() if (p / f"{p.name}.jwt").is_file())

    def user_names(self, account: str, operator: Optional[str] = None) -> list[str]:
        op = operator or self.current_operator()
        d = self.account_dir(op, account) / "users"
        if not d.is_dir():
            return []
        return sorted(p.stem for p in d.glob("*.jwt"))

    def accounts(self, operator: Optional[str] = None) -> Iterator[Entity]:
        op = operator or self.current_operator()
        for n in self.account_names(op):
            yield self.account(n, op)

    def find_account(self, name_or_key: str, operator: Optional[str] = None) -> Entity:
        """An account by name or by public key."""
        op = operator or self.current_operator()
        if name_or_key in self.account_names(op):
            return self.account(name_or_key, op)
        for e in self.accounts(op):
            if e.public_key == name_or_key:
                return e
        raise StoreError(f"no account named {name_or_key!r} in the store")

    def write_operator(self, name: str, token: str) -> Path:
        d = self.operator_dir(name)
        ensure_dir(d)
        open(self.home / ".lock", "a").close()  # the file fsutil.store_lock takes (made with the store)
        marker = d / ".nsc"
        if not marker.exists():
            info = {"managed": False, "name": name, "kind": "operator", "version": "1"}
            atomic_write(marker, json.dumps(info, separators=(",", ":")))
        path = self.operator_jwt_path(name)
        atomic_write(path, token)
        return path

    def write_account(self, operator: str, name: str, token: str) -> Path:
        path = self.account_jwt_path(operator, name)
        atomic_write(path, token)
        return path

    def write_user(self, operator: str, account: str, name: str, token: str) -> Path:
        path = self.user_jwt_path(operator, account, name)
        atomic_write(path, token)
        return path

    def write_creds(self, operator: str, account: str, user: str, text: str, *, force: bool = False) -> Path:
        if not self._keystore_ready:
            self._ensure_keystore()
            ensure_dir(self.creds_dir, private=True)
        path = self.creds_path(operator, account, user)
        atomic_write(path, text, private=True, force=force)
        return path

    def read_creds(self, operator: str, account: str, user: str) -> str:
        path = self.creds_path(operator, account, user)
        try:
            return path.read_text()
        except FileNotFoundError:
            raise StoreError(
                f"no creds for user {user!r} of account {account!r}; run 'dchat-ops generate creds'"
            ) from None

    def remove_user(self, operator: str, account: str, user: str) -> None:
        for p in (self.user_jwt_path(operator, account, user), self.creds_path(operator, account, user)):
            try:
                p.unlink()
            except FileNotFoundError:
                pass
