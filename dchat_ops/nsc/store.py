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

The home folder is a :class:`~dchat_ops.home.Home` (resolved once; see there for the default).

Every read-modify-write of the store is one unit of work: it holds the store lock, loads, hands
out a copy of the claims, and on success re-signs and writes; on an error inside it nothing is
written, and a kill inside it is rolled back by the next command that takes the store lock (the unit
of work is journaled: see :func:`dchat_ops._fs.unit_of_work` and docs/crash-safety.md).  A re-signed JWT always gets an ``iat`` after the one it replaces (hence a new ``jti``),
also within the same second, so a server that holds the older one takes the newer.

    with store.edit_account("chat") as claims:
        claims.revocations[user_key] = now
    with store.edit_user("chat", "alice") as claims:
        claims.tags.append("ops")
    with store.edit_operator() as claims:
        claims.operator_service_urls = ["nats://a:4222"]
    with store.transaction():                      # several new entities, all or nothing
        store.write_account(op, name, store.sign(claims, signer))
"""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, Optional, TypeVar, Union

from dchat_ops._decode import read_text
from dchat_ops._fs import FileTransaction, active_transaction, atomic_write, ensure_dir, store_lock, unit_of_work
from dchat_ops.errors import SEED_PATTERN, FieldError, JWTError, NKeyError, StoreError
from dchat_ops.home import Home, default_home
from dchat_ops.nsc.claims import AccountClaims, Claims, OperatorClaims, ScopedSigningKey, UserClaims
from dchat_ops.nsc.creds import format_creds
from dchat_ops.nsc.jwt import Clock, decode, encode
from dchat_ops.nsc.keys import KeyPair, check_public_key, kind_of_public

__all__ = ["Entity", "Store", "check_name", "default_home", "operator_signer", "user_signer"]

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}")  # matched whole (fullmatch): no newline at the end
_KIND_DIR = {"operator": "O", "account": "A", "user": "U", "server": "N", "cluster": "C", "curve": "X"}
# the shape of a public nkey (its first letter is its kind's keystore folder); the CRC is not checked
_PUBLIC_SHAPE = re.compile(r"^[OAUNCX][A-Z2-7]{55}\Z", re.ASCII)

# The keystore root's .gitignore, as nsc writes it.
_GITIGNORE = "# ignore all nk files \n**/*.nk\n\n# ignore all creds files\n**/*.creds\n"
# (temporary files of atomic writes end like their target, .tmp-<pid>-<n>-<name>.nk: these patterns cover them)


def check_name(name: str, what: str = "name") -> str:
    """Refuse names that are empty, too long, could escape the store (``/``, ``..``, spaces), hold a control
    character (a newline at the end too), or look like an nkey seed (a name is public: it is a file name, a
    JWT claim, ``list`` output).  :class:`FieldError` (a bad value: exit 2 on the command line)."""
    if isinstance(name, str) and SEED_PATTERN.search(name):
        raise FieldError(
            what,
            "it looks like an nkey seed; names are public",
            message=f"invalid {what}: it looks like an nkey seed; names are public",
        )
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        reason = "use 1-64 letters, digits, '.', '_', '-' or '@', starting with a letter or digit"
        raise FieldError(what, reason, message=f"invalid {what} {name!r}: {reason}")
    return name


C = TypeVar("C", bound=Claims)


@dataclass
class Entity(Generic[C]):
    """An operator, account or user as held in the store: its name, token and decoded claims."""

    kind: str
    name: str
    token: str
    claims: C
    path: Path

    @property
    def public_key(self) -> str:
        return self.claims.subject


class Store:
    """An nsc-compatible store under ``home``.  ``clock`` (Unix seconds) is used for ``iat`` / expiry.

    ``location`` is the resolved :class:`~dchat_ops.home.Home`; ``home`` its absolute path.
    ``operator`` chooses the operator this Store works on in a home that holds several (see
    :meth:`current_operator`); None: the context's.
    """

    def __init__(
        self,
        home: Optional[Union[Home, os.PathLike[str], str]] = None,
        *,
        clock: Optional[Clock] = None,
        operator: Optional[str] = None,
    ):
        self.selected_operator = operator or None
        self.location = Home(home)
        self.home: Path = self.location.path
        self.clock = clock
        self._key_cache: dict[str, KeyPair] = {}
        self._decoded: dict[str, Claims] = {}  # token -> verified claims
        self._keystore_ready = False
        self._home_key = str(self.home)  # resolved: the key of its unit of work (see _fs.unit_of_work)
        self._folders: dict[tuple[str, str, str], str] = {}  # ("users" | "creds" | "keys", operator, account) -> folder

    # layout ---------------------------------------------------------------------------------------
    @property
    def stores_dir(self) -> Path:
        return self.location.stores_dir

    @property
    def keys_root(self) -> Path:
        return self.location.keys_dir

    @property
    def keys_dir(self) -> Path:
        return self.keys_root / "keys"

    @property
    def creds_dir(self) -> Path:
        return self.keys_root / "creds"

    @property
    def nodes_dir(self) -> Path:
        return self.location.nodes_dir

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
        return Path(f"{self._folder('keys', '', '')}/{_KIND_DIR[kind]}/{public_key[1:3]}/{public_key}.nk")

    def _folder(self, what: str, operator: str, account: str) -> str:
        """An account's users folder (``what`` = "users") or creds folder ("creds"), or the keystore's
        seeds folder ("keys"), as text.

        Bulk writes (thousands of users of one account) name the folder once; each user's file name is
        the checked user name in it.
        """
        key = (what, operator, account)
        folder = self._folders.get(key)
        if folder is None:
            if what == "users":
                folder = os.fspath(self.account_dir(operator, account) / "users")
            elif what == "creds":
                folder = os.fspath(self.creds_path(operator, account, "x").parent)
            else:
                folder = os.fspath(self.keys_dir)
            self._folders[key] = folder
        return folder

    # context -------------------------------------------------------------------------------------
    @property
    def context_path(self) -> Path:
        return self.location.context_file

    def context(self) -> dict[str, Any]:
        try:
            data = json.loads(self.context_path.read_bytes())
            return data if isinstance(data, dict) else {}
        except (FileNotFoundError, ValueError, RecursionError):  # missing or damaged: no current context
            return {}

    def set_context(self, **values: str) -> None:
        ctx = self.context()
        ctx.update({k: v for k, v in values.items() if v})
        self._write(self.context_path, json.dumps(ctx, indent=2, sort_keys=True) + "\n")

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
        """The operator this Store works on: the one it was made with (``operator``), else the context's
        (``dchat-ops use operator``), else the only one.  A chosen operator the home does not hold is a bad
        value (:class:`FieldError`)."""
        names = self.operator_names()
        if not names:
            self.require()
        if self.selected_operator:
            if self.selected_operator not in names:
                raise FieldError(
                    "--operator",
                    f"no operator named {self.selected_operator!r}",
                    message=f"no operator named {self.selected_operator!r} in the store (operators: {', '.join(names)})",
                )
            return self.selected_operator
        ctx = self.context().get("operator")
        if isinstance(ctx, str) and ctx in names:
            return ctx
        if len(names) == 1:
            return names[0]
        raise StoreError(
            f"the store holds several operators ({', '.join(names)}) and none is current: choose one with "
            "'dchat-ops --operator NAME ...' or 'dchat-ops use operator NAME'"
        )

    def use_operator(self, name: str) -> None:
        """Make ``name`` the current operator of the home (the context's; its account is kept when it is
        one of that operator's, else dropped)."""
        check_name(name, "operator name")
        with self.transaction():
            names = self.operator_names()
            if name not in names:
                self.require()
                raise FieldError(
                    "operator",
                    f"no operator named {name!r}",
                    message=f"no operator named {name!r} in the store (operators: {', '.join(names)})",
                )
            ctx = self.context()
            ctx["operator"] = name
            if ctx.get("account") not in self.account_names(name):
                ctx.pop("account", None)
            self._write(self.context_path, json.dumps(ctx, indent=2, sort_keys=True) + "\n")

    def use_account(self, name: str) -> None:
        """Make ``name`` (an account of the current operator) the default of commands that take
        ``--account``, remembered in the home's context."""
        check_name(name, "account name")
        with self.transaction():
            op = self.current_operator()
            names = self.account_names(op)
            if name not in names:
                raise FieldError(
                    "account",
                    f"no account named {name!r}",
                    message=f"operator {op} has no account named {name!r} (accounts: {', '.join(names)})",
                )
            self.set_context(account=name)

    def default_account(self) -> str:
        """The context's account, else the only non-system account."""
        op = self.current_operator()
        ctx = self.context().get("account")
        names = self.account_names(op)
        if isinstance(ctx, str) and ctx in names:
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
        self._write(path, kp.seed, private=True, force=force)
        self._key_cache[kp.public_key] = kp
        return path

    def save_seed(self, public_key: str, seed: str, *, force: bool = False) -> Path:
        """Keep a seed whose public key is already known (bulk paths: no key derivation, and only the
        key's shape is checked).  The caller vouches that ``seed`` belongs to ``public_key``."""
        if not isinstance(public_key, str) or not _PUBLIC_SHAPE.match(public_key):
            path = self.key_path(public_key)  # raises the error that says what is wrong with it
        else:
            path = Path(f"{self._folder('keys', '', '')}/{public_key[0]}/{public_key[1:3]}/{public_key}.nk")
        if not self._keystore_ready:
            self._ensure_keystore()
        self._write(path, seed, private=True, force=force)
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
            text = read_text(path, StoreError)
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
    def _read_entity(self, kind: str, name: str, path: Path, cls: type[C]) -> Entity[C]:
        """Read and verify a JWT file (an operator or account token already verified by this store is not
        verified again; users, read by the thousand and rarely twice, are not kept)."""
        try:
            token = read_text(path, StoreError).strip()
        except FileNotFoundError:
            raise StoreError(f"no {kind} named {name!r} in the store") from None
        cached = self._decoded.get(token)
        if cached is not None and isinstance(cached, cls):
            return Entity(kind, name, token, cached.copy(), path)
        try:
            claims = decode(token, cls)
        except JWTError as exc:
            raise StoreError(f"{path}: {exc}") from None
        self._remember_token(token, claims)
        return Entity(kind, name, token, claims, path)

    def operator(self, name: Optional[str] = None) -> Entity[OperatorClaims]:
        name = name or self.current_operator()
        return self._read_entity("operator", name, self.operator_jwt_path(name), OperatorClaims)

    def account(self, name: str, operator: Optional[str] = None) -> Entity[AccountClaims]:
        op = operator or self.current_operator()
        return self._read_entity("account", name, self.account_jwt_path(op, name), AccountClaims)

    def user(self, account: str, name: str, operator: Optional[str] = None) -> Entity[UserClaims]:
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
        try:
            # a temporary file of a write under way (.tmp-<pid>-<n>-<name>.jwt) is not a user
            return sorted(n[:-4] for n in os.listdir(d) if n.endswith(".jwt") and len(n) > 4 and n[:5] != ".tmp-")
        except (FileNotFoundError, NotADirectoryError):
            return []

    def accounts(self, operator: Optional[str] = None) -> Iterator[Entity[AccountClaims]]:
        op = operator or self.current_operator()
        for n in self.account_names(op):
            yield self.account(n, op)

    def find_account(self, name_or_key: str, operator: Optional[str] = None) -> Entity[AccountClaims]:
        """An account by name or by public key."""
        op = operator or self.current_operator()
        if name_or_key in self.account_names(op):
            return self.account(name_or_key, op)
        for e in self.accounts(op):
            if e.public_key == name_or_key:
                return e
        raise StoreError(f"no account named {name_or_key!r} in the store")

    # writing: inside a unit of work, every file written is remembered and put back on an error ----
    def _write(self, path: Path, data: str | bytes, *, private: bool = False, force: bool = True) -> None:
        tx = active_transaction(self._home_key)
        if tx is not None:
            tx.remember(path)
        atomic_write(path, data, private=private, force=force)

    def write_many(self, items: Sequence[tuple[Path, str | bytes, bool]], *, threads: int = 4) -> None:
        """Write many files of the home, each atomically (``(path, data, private)``), in the unit of work
        under way when there is one (remembered in one journal entry).  Replacing a file costs the
        filesystem more than writing it (the old one's blocks are freed), so many run on ``threads``."""
        tx = active_transaction(self._home_key)
        if tx is not None:
            tx.remember_many([path for path, _, _ in items])
        if threads <= 1 or len(items) < 64:
            for path, data, private in items:
                atomic_write(path, data, private=private, force=True)
            return
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(threads) as pool:
            list(pool.map(lambda item: atomic_write(item[0], item[1], private=item[2], force=True), items))

    def write_file(self, path: Path, data: str | bytes, *, private: bool = False) -> None:
        """Write any file of the home (a certificate, a state file) atomically, inside the unit of work
        under way when there is one (so that it is put back with the rest)."""
        self._write(path, data, private=private)

    def write_operator(self, name: str, token: str) -> Path:
        d = self.operator_dir(name)
        ensure_dir(d)
        marker = d / ".nsc"
        if not marker.exists():
            info = {"managed": False, "name": name, "kind": "operator", "version": "1"}
            self._write(marker, json.dumps(info, separators=(",", ":")))
        path = self.operator_jwt_path(name)
        self._write(path, token)
        return path

    def write_account(self, operator: str, name: str, token: str) -> Path:
        path = self.account_jwt_path(operator, name)
        self._write(path, token)
        return path

    def write_user(self, operator: str, account: str, name: str, token: str) -> Path:
        path = Path(f"{self._folder('users', operator, account)}/{check_name(name, 'user name')}.jwt")
        self._write(path, token)
        return path

    def write_creds(self, operator: str, account: str, user: str, text: str, *, force: bool = False) -> Path:
        if not self._keystore_ready:
            self._ensure_keystore()
            ensure_dir(self.creds_dir, private=True)
        path = Path(f"{self._folder('creds', operator, account)}/{check_name(user, 'user name')}.creds")
        self._write(path, text, private=True, force=force)
        return path

    def read_creds(self, operator: str, account: str, user: str) -> str:
        path = self.creds_path(operator, account, user)
        try:
            return read_text(path, StoreError)
        except FileNotFoundError:
            raise StoreError(
                f"no creds for user {user!r} of account {account!r}; run 'dchat-ops generate creds'"
            ) from None

    def remove_user(self, operator: str, account: str, user: str) -> None:
        with self.transaction() as tx:
            for p in (self.user_jwt_path(operator, account, user), self.creds_path(operator, account, user)):
                tx.delete(p)

    # the unit of work ----------------------------------------------------------------------------------
    def lock(self) -> store_lock:
        """The store lock (flock on ``<home>/.lock``, re-entrant); made on a home that does not exist yet."""
        return self.location.lock()

    @contextmanager
    def transaction(self) -> Iterator[FileTransaction]:
        """Hold the store lock; every file the store writes inside is put back if the block raises, and
        also when the process is killed in it: the change is journaled in ``<home>/.journal`` and the
        next process that takes the store lock rolls it back (see :func:`dchat_ops._fs.unit_of_work`).

        Nested transactions (of any Store on the same home, in this process) join the outermost one,
        which decides.
        """
        with unit_of_work(self.home) as tx:
            try:
                yield tx
            except BaseException:
                self._key_cache.clear()  # seeds written in the block may be gone again
                self._keystore_ready = False
                raise

    def current_transaction(self) -> Optional[FileTransaction]:
        """The unit of work under way on this home in this process (None outside :meth:`transaction`)."""
        return active_transaction(self._home_key)

    def issue_clock(self, replaces: int = 0) -> Clock:
        """The ``iat`` of a JWT signed now: the clock's second, and always after ``replaces`` (the ``iat`` of
        the version it replaces), so a re-signed JWT gets a new ``jti`` also within the same second."""
        now = int((self.clock or time.time)())
        iat = max(now, replaces + 1) if replaces else now
        return lambda: iat

    def sign(self, claims: Claims, signer: KeyPair, *, replaces: int = 0) -> str:
        """Sign ``claims`` (setting issuer, ``iat`` and ``jti``): the one place the store's JWTs are signed."""
        token = encode(claims, signer, clock=self.issue_clock(replaces))
        self._remember_token(token, claims)
        return token

    def _remember_token(self, token: str, claims: Claims) -> None:
        if isinstance(claims, UserClaims):
            return
        if len(self._decoded) > 256:
            self._decoded.clear()
        self._decoded[token] = claims.copy()

    @contextmanager
    def edit_operator(self, name: Optional[str] = None) -> Iterator[OperatorClaims]:
        """Unit of work on the operator: a copy of its claims, re-signed (identity key) and written if changed."""
        with self.transaction():
            ent = self.operator(name)
            claims: OperatorClaims = ent.claims.copy()
            yield claims
            if claims.to_dict() != ent.claims.to_dict():
                token = self.sign(claims, self.load_key(claims.subject), replaces=ent.claims.issued_at)
                self.write_operator(ent.name, token)

    @contextmanager
    def edit_account(self, name: str, operator: Optional[str] = None) -> Iterator[AccountClaims]:
        """Unit of work on an account: a copy of its claims, re-signed by the operator's signer and written
        if changed."""
        with self.transaction():
            op = self.operator(operator)
            ent = self.account(name, op.name)
            claims: AccountClaims = ent.claims.copy()
            yield claims
            if claims.to_dict() != ent.claims.to_dict():
                # the operator is read again: the block may have changed it (a signing key, strict mode)
                signer = operator_signer(self, self.operator(op.name).claims)
                self.write_account(op.name, name, self.sign(claims, signer, replaces=ent.claims.issued_at))

    @contextmanager
    def edit_user(self, account: str, name: str, operator: Optional[str] = None) -> Iterator[UserClaims]:
        """Unit of work on a user: a copy of its claims; if changed, re-signed with the key that signed it
        (or the account's current user signer), and its JWT and creds written."""
        with self.transaction():
            op = self.operator(operator)
            acc = self.account(account, op.name)
            ent = self.user(account, name, op.name)
            claims: UserClaims = ent.claims.copy()
            yield claims
            if claims.to_dict() != ent.claims.to_dict():
                if self.has_key(claims.issuer) and (
                    claims.issuer == acc.public_key or claims.issuer in acc.claims.signing_key_map()
                ):
                    signer = self.load_key(claims.issuer)
                else:
                    signer, _ = user_signer(self, op.claims, acc.claims)
                claims.issuer_account = "" if signer.public_key == acc.public_key else acc.public_key
                # after the version it replaces, and after a revocation that covers it: a re-issue made in
                # the second of a revocation is not covered by it, as one made a second later is not
                revs = acc.claims.revocations
                covering = max(revs.get(claims.subject, 0), revs.get("*", 0))
                replaces = max(ent.claims.issued_at, covering if covering >= ent.claims.issued_at else 0)
                token = self.sign(claims, signer, replaces=replaces)
                self.write_user(op.name, account, name, token)
                if self.has_key(claims.subject):
                    creds = format_creds(token, self.load_key(claims.subject).seed)
                    self.write_creds(op.name, account, name, creds, force=True)


# --- signers -------------------------------------------------------------------------------------


def operator_signer(store: Store, op: OperatorClaims) -> KeyPair:
    """The key that signs accounts: a held operator signing key, else the identity key (not in strict mode)."""
    for sk in op.signing_keys:
        if store.has_key(sk):
            return store.load_key(sk)
    if op.strict_signing_key_usage:
        raise StoreError("the operator requires signing keys, and the keystore holds none of them")
    if not store.has_key(op.subject):
        raise StoreError(
            f"this store holds no key that signs accounts of operator {op.name} ({op.subject[:12]}…): accounts are "
            "signed where the operator's keys are ('dchat-ops export keys --operator' there, then import it here)"
        )
    return store.load_key(op.subject)


def user_signer(
    store: Store, op: OperatorClaims, acc: AccountClaims, role: Optional[str] = None, key: Optional[str] = None
) -> tuple[KeyPair, Optional[ScopedSigningKey]]:
    """The key that signs a user of ``acc`` (and its scope when it is a scoped key)."""
    sk_map = acc.signing_key_map()
    if key:
        check_public_key(key, "account", "signing key")
        if key != acc.subject and key not in sk_map:
            raise StoreError(f"{key} is not a signing key of account {acc.name}")
        return store.load_key(key), sk_map.get(key)
    if role:
        scope = acc.scope_for_role(role)
        if scope is None:
            roles = sorted(s.role for s in sk_map.values() if s is not None)
            raise StoreError(
                f"account {acc.name} has no signing key with role {role!r}"
                + (f" (roles: {', '.join(roles)})" if roles else "")
            )
        return store.load_key(scope.key), scope
    for k, scope in sk_map.items():
        if scope is None and store.has_key(k):
            return store.load_key(k), None
    if op.strict_signing_key_usage:
        raise StoreError(
            f"the operator requires signing keys; account {acc.name} has no plain signing key in the keystore"
        )
    if not store.has_key(acc.subject):
        raise StoreError(
            f"this store holds no key that signs users of account {acc.name} ({acc.subject[:12]}…): users are "
            "issued where its keys are (an enrolled device asks its operator)"
        )
    return store.load_key(acc.subject), None
