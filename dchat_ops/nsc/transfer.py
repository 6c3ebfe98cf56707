"""Moving identities: export and import of creds and keys, in encrypted bundles or nsc's own files.

    >>> data = export_bundle(store, "creds", account="chat", user="alice", passphrase=pw)
    >>> plan = import_bundle(other_store, data, passphrase=pw)      # verify, plan, write all or nothing
    >>> plan.added
    ['user chat/alice']

Everything imported is verified first: every JWT's signature and its chain up to the local operator
(a foreign operator is refused unless ``trust_operator``), and every seed must belong to a key the
imported JWTs name.  Importing what is already there changes nothing; a different key or JWT under
the same name needs ``force``.
"""

from __future__ import annotations

import os
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from dchat_ops._decode import read_text
from dchat_ops._fs import atomic_write, ensure_dir
from dchat_ops.errors import CredsError, ExistsError, FieldError, JWTError, NKeyError, StoreError
from dchat_ops.nsc.bundle import check_payload, open_bundle, seal_bundle
from dchat_ops.nsc.claims import AccountClaims, OperatorClaims, UserClaims
from dchat_ops.nsc.creds import format_creds, parse_creds
from dchat_ops.nsc.jwt import decode, verify_chain
from dchat_ops.nsc.keys import KeyPair, looks_like_seed
from dchat_ops.nsc.limits import Problem, account_problems, operator_problems, user_problems
from dchat_ops.nsc.store import Entity, Store, check_name

__all__ = [
    "ImportPlan",
    "export_bundle",
    "export_payload",
    "export_plain",
    "import_bundle",
    "import_path",
    "import_payload",
]

KINDS = ("creds", "operator", "account", "all")


# --- export -----------------------------------------------------------------------------------------


def _account_seeds(store: Store, acc: AccountClaims) -> list[str]:
    keys = [acc.subject, *list(acc.signing_key_map())]
    return [store.load_key(k).seed for k in keys if store.has_key(k)]


def export_payload(
    store: Store, what: str, *, account: Optional[str] = None, user: Optional[str] = None
) -> dict[str, Any]:
    """The content of an export: ``creds`` (one user), ``operator``, ``account`` (with its users) or ``all``."""
    if what not in KINDS:
        raise StoreError(f"unknown export {what!r} (one of {', '.join(KINDS)})")
    op = store.operator()
    payload: dict[str, Any] = {
        "kind": what,
        "operator": {"name": op.name, "jwt": op.token},
        "accounts": [],
        "users": [],
        "seeds": [],
    }

    def add_account(name: str, with_seeds: bool, with_users: bool) -> None:
        acc = store.account(name, op.name)
        payload["accounts"].append({"name": name, "jwt": acc.token})
        if with_seeds:
            payload["seeds"].extend(_account_seeds(store, acc.claims))
        if with_users:
            for u in store.user_names(name, op.name):
                add_user(name, u)

    def add_user(acc_name: str, name: str) -> None:
        ue = store.user(acc_name, name, op.name)
        payload["users"].append({"account": acc_name, "name": name, "jwt": ue.token})
        if store.has_key(ue.public_key):
            payload["seeds"].append(store.load_key(ue.public_key).seed)

    if what == "creds":
        if not user:
            raise StoreError("export creds needs --user")
        account = account or store.default_account()
        add_account(account, with_seeds=False, with_users=False)
        add_user(account, user)
        if len(payload["seeds"]) != 1:
            raise StoreError(f"the keystore has no seed for user {account}/{user}")
    elif what == "account":
        name = account or store.default_account()
        add_account(name, with_seeds=True, with_users=True)
        sys_acc = store.find_account(op.claims.system_account, op.name)
        if sys_acc.name != name:  # public, and what makes the receiving store whole
            payload["accounts"].append({"name": sys_acc.name, "jwt": sys_acc.token})
    else:
        for k in [op.public_key, *list(op.claims.signing_keys)]:
            if store.has_key(k):
                payload["seeds"].append(store.load_key(k).seed)
        for name in store.account_names(op.name):
            add_account(name, with_seeds=(what == "all"), with_users=(what == "all"))
    return payload


def export_bundle(
    store: Store,
    what: str,
    *,
    account: Optional[str] = None,
    user: Optional[str] = None,
    passphrase: Optional[str] = None,
    recipient: Optional[str] = None,
) -> bytes:
    return seal_bundle(
        export_payload(store, what, account=account, user=user), passphrase=passphrase, recipient=recipient
    )


def export_plain(
    store: Store,
    what: str,
    out: Path,
    *,
    account: Optional[str] = None,
    user: Optional[str] = None,
    include_jwts: bool = False,
    force: bool = False,
) -> list[Path]:
    """nsc's own formats: a ``.creds`` file for ``creds``, else a folder of ``.nk`` (and ``.jwt``) files."""
    payload = export_payload(store, what, account=account, user=user)
    out = Path(out)
    written = []
    if what == "creds":
        u = payload["users"][0]
        atomic_write(out, format_creds(u["jwt"], payload["seeds"][0]), private=True, force=force)
        return [out]
    ensure_dir(out, private=True)
    for seed in payload["seeds"]:
        kp = KeyPair.from_seed(seed)
        p = out / f"{kp.public_key}.nk"
        atomic_write(p, seed, private=True, force=force)
        written.append(p)
    if include_jwts:
        atomic_write(out / f"{payload['operator']['name']}.jwt", payload["operator"]["jwt"], force=force)
        for a in payload["accounts"]:
            atomic_write(out / f"{a['name']}.jwt", a["jwt"], force=force)
        for u in payload["users"]:
            atomic_write(out / f"{u['account']}.{u['name']}.jwt", u["jwt"], force=force)
    return written


# --- import -----------------------------------------------------------------------------------------


@dataclass
class ImportPlan:
    """What an import adds, finds already there, and (with force) replaces."""

    added: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    replaced: list[str] = field(default_factory=list)
    writes: list[tuple[Path, str, bool]] = field(default_factory=list)  # path, text, private
    keys: list[KeyPair] = field(default_factory=list)
    operator_name: str = ""
    new_operator: bool = False
    operators: list[str] = field(default_factory=list)  # every operator of the import (several: an nsc home)

    @property
    def changes(self) -> bool:
        return bool(self.added or self.replaced)

    def to_dict(self) -> dict[str, Any]:
        return {
            "added": self.added,
            "unchanged": self.unchanged,
            "replaced": self.replaced,
            "operator": self.operator_name,
            "new_operator": self.new_operator,
            "operators": self.operators or ([self.operator_name] if self.operator_name else []),
        }


def _plan_write(plan: ImportPlan, path: Path, text: str, label: str, force: bool, private: bool = False) -> None:
    try:
        current = path.read_bytes().decode("utf-8", "replace")  # a damaged file differs from any import
    except FileNotFoundError:
        current = None
    if current is not None and current.strip() == text.strip():
        plan.unchanged.append(label)
        return
    if current is not None and not force:
        raise ExistsError(f"{label} already exists with a different content; use --force to replace it")
    (plan.replaced if current is not None else plan.added).append(label)
    plan.writes.append((path, text, private))


def import_payload(
    store: Store, payload: dict[str, Any], *, trust_operator: bool = False, force: bool = False, dry_run: bool = False
) -> ImportPlan:
    """Verify everything in ``payload``, then write it all (or nothing, on any error).

    Planning and writing hold the store lock (also on a home that does not exist yet).
    """
    with store.lock():
        return _import_payload(store, payload, trust_operator=trust_operator, force=force, dry_run=dry_run)


def _import_payload(
    store: Store, payload: dict[str, Any], *, trust_operator: bool, force: bool, dry_run: bool
) -> ImportPlan:
    if not isinstance(payload, dict) or "operator" not in payload:
        raise StoreError("the import holds no operator JWT to verify against")
    check_payload(payload)
    try:
        op_token = payload["operator"]["jwt"]
        op = decode(op_token, OperatorClaims)
    except (KeyError, TypeError):
        raise StoreError("the import's operator entry is damaged") from None
    verify_chain(op)
    plan = ImportPlan()
    local_ops = store.operator_names()
    local: Optional[Entity[OperatorClaims]] = None
    for name in local_ops:
        e = store.operator(name)
        if e.public_key == op.subject:
            local = e
    if local is None:
        if local_ops and not trust_operator:
            raise StoreError(
                f"the import belongs to operator {op.name} ({op.subject}), not to this store's operator; "
                "use --trust-operator to add it"
            )
        if not local_ops and not trust_operator and payload.get("kind") != "operator" and payload.get("kind") != "all":
            raise StoreError(
                f"this store has no operator; the import belongs to operator {op.name}: use --trust-operator to take it"
            )
        op_name = check_name(payload["operator"].get("name") or op.name, "operator name")
        _refuse_broken(f"operator {op_name}", operator_problems(op))
        plan.new_operator = True
    else:
        op_name = local.name
        op = local.claims
        op_token = local.token
    plan.operator_name = op_name
    if plan.new_operator:
        _plan_write(plan, store.operator_jwt_path(op_name), op_token, f"operator {op_name}", force)

    accounts: dict[str, tuple[str, AccountClaims]] = {}  # public key -> (name, claims)
    if not plan.new_operator:
        for ae in store.accounts(op_name):
            accounts[ae.public_key] = (ae.name, ae.claims)
    for a in payload.get("accounts", []):
        try:
            res = verify_chain(op, a["jwt"], check_expiry=False)
        except (KeyError, TypeError):
            raise StoreError("an account entry of the import is damaged") from None
        acc = res.account
        assert acc is not None  # verify_chain returns the account it was given
        name = check_name(a.get("name") or acc.name, "account name")
        _refuse_broken(f"account {name}", account_problems(acc))
        known = accounts.get(acc.subject)
        if known and known[0] != name:
            name = known[0]
        if known and known[1].issued_at > acc.issued_at:
            # an older version of an account this store holds (a bundle made before a revocation, say): the
            # store's stays, with --force too: taking it would undo revocations and limits made since
            plan.unchanged.append(f"account {name} (this store's version is newer)")
            continue
        accounts[acc.subject] = (name, acc)
        _plan_write(plan, store.account_jwt_path(op_name, name), a["jwt"], f"account {name}", force)
    wanted_keys = {op.subject, *op.signing_keys}
    if not plan.new_operator:  # seeds of users this store already holds may come back too
        for acc_name in store.account_names(op_name):
            for uname in store.user_names(acc_name, op_name):
                try:
                    wanted_keys.add(store.user(acc_name, uname, op_name).public_key)
                except StoreError:
                    continue
    for pub, (_, acc) in accounts.items():
        wanted_keys.update([pub, *acc.signing_key_map()])
    for u in payload.get("users", []):
        try:
            token = u["jwt"]
            claims = decode(token, UserClaims)
        except (KeyError, TypeError):
            raise StoreError("a user entry of the import is damaged") from None
        acc_key = claims.issuer_account or claims.issuer
        if acc_key not in accounts:
            raise StoreError(
                f"user {claims.name} belongs to account {acc_key}, which is neither here nor in the import"
            )
        acc_name, acc = accounts[acc_key]
        verify_chain(op, acc, token, check_expiry=False, check_revocation=False)
        name = check_name(u.get("name") or claims.name, "user name")
        _refuse_broken(f"user {acc_name}/{name}", user_problems(claims))
        _plan_write(plan, store.user_jwt_path(op_name, acc_name, name), token, f"user {acc_name}/{name}", force)
        wanted_keys.add(claims.subject)
        seed = next((s for s in payload.get("seeds", []) if _pub_of(s) == claims.subject), None)
        if seed:
            _plan_write(
                plan,
                store.creds_path(op_name, acc_name, name),
                format_creds(token, seed),
                f"creds {acc_name}/{name}",
                force,
                private=True,
            )
    for seed in payload.get("seeds", []):
        kp = _keypair(seed)
        if kp.public_key not in wanted_keys:
            raise StoreError(f"the import holds a seed for {kp.public_key}, which no imported or local JWT names")
        _plan_write(plan, store.key_path(kp.public_key), seed, f"key {kp.public_key}", force, private=True)
        plan.keys.append(kp)
    if dry_run or not plan.changes:
        return plan
    with store.transaction() as tx:
        for path, text, private in plan.writes:
            tx.write(path, text, private=private)
        if plan.new_operator:
            marker = store.operator_dir(op_name) / ".nsc"
            tx.write(marker, f'{{"managed":false,"name":"{op_name}","kind":"operator","version":"1"}}')
        if not local_ops:
            tx.write(store.context_path, f'{{\n  "operator": "{op_name}"\n}}\n')
    store._ensure_keystore()
    return plan


def _refuse_broken(label: str, problems: list[Problem]) -> None:
    """Refuse an imported JWT holding a value nats-server refuses (:mod:`dchat_ops.nsc.limits`): nothing of
    the import is written.  What the server takes but the tool would not write is left to ``validate``."""
    for level, exc in problems:
        if level == "error":
            raise StoreError(
                f"{label}: {exc}: nats-server refuses this JWT; correct it where it was made (nothing was imported)"
            )


def _pub_of(seed: str) -> str:
    try:
        return KeyPair.from_seed(seed).public_key
    except NKeyError:
        return ""


def _keypair(seed: Any) -> KeyPair:
    try:
        return KeyPair.from_seed(seed)
    except (NKeyError, TypeError):
        raise StoreError("the import holds a damaged seed") from None


def import_bundle(
    store: Store,
    data: bytes,
    *,
    passphrase: Optional[str] = None,
    curve_key: Optional[KeyPair] = None,
    trust_operator: bool = False,
    force: bool = False,
    dry_run: bool = False,
) -> ImportPlan:
    payload = open_bundle(data, passphrase=passphrase, curve_key=curve_key)
    return import_payload(store, payload, trust_operator=trust_operator, force=force, dry_run=dry_run)


def import_path(
    store: Store, path: Path, *, trust_operator: bool = False, force: bool = False, dry_run: bool = False
) -> ImportPlan:
    """Import plain files nsc writes: a ``.creds``, a ``.nk``, a ``.jwt``, or a folder of them."""
    path = Path(path)
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    if not files:
        raise StoreError(f"nothing to import in {path}")
    payload: dict[str, Any] = {"kind": "files", "accounts": [], "users": [], "seeds": []}
    op_token = None
    operators: list[dict[str, Any]] = []  # every operator JWT among the files: {"name", "jwt", "claims"}
    for f in files:
        if f.suffix not in (".creds", ".nk", ".jwt"):
            continue
        try:
            text = read_text(f, StoreError).strip()
        except OSError as exc:
            raise StoreError(f"cannot read {f}: {exc.strerror}") from None
        if f.suffix == ".creds":
            try:
                creds = parse_creds(text)
            except CredsError as exc:
                raise StoreError(f"{f}: {exc}") from None
            payload["users"].append({"jwt": creds.jwt})
            payload["seeds"].append(creds.seed)
        elif f.suffix == ".nk":
            if not looks_like_seed(text):
                raise StoreError(f"{f} does not hold an nkey seed")
            payload["seeds"].append(text)
        else:
            try:
                c = decode(text)
            except JWTError as exc:
                raise StoreError(f"{f}: {exc}") from None
            if isinstance(c, OperatorClaims):
                op_token = text
                # nsc's layout names the operator by its folder: stores/<name>/<name>.jwt
                name = f.stem if f.parent.name == f.stem else c.name
                if all(o["claims"].subject != c.subject for o in operators):
                    operators.append({"name": name, "jwt": text, "claims": c})
            elif isinstance(c, AccountClaims):
                payload["accounts"].append({"jwt": text})
            elif isinstance(c, UserClaims):
                payload["users"].append({"jwt": text})
    if not (payload["accounts"] or payload["users"] or payload["seeds"] or op_token):
        raise StoreError(f"nothing to import in {path}: expected .creds, .nk or .jwt files or a bundle")
    # an nsc home holds each user twice (its JWT and its creds file) and a seed may come twice
    payload["users"] = list({u["jwt"]: u for u in payload["users"]}.values())
    payload["seeds"] = list(dict.fromkeys(payload["seeds"]))
    if len(operators) > 1 or (store.selected_operator and operators):
        return _import_operators(store, operators, payload, trust_operator=trust_operator, force=force, dry_run=dry_run)
    if op_token is None:
        if not store.exists():
            raise StoreError("the files hold no operator JWT and this store has none to verify them against")
        op_token = store.operator().token
    payload["operator"] = {"jwt": op_token}
    return import_payload(store, payload, trust_operator=trust_operator, force=force, dry_run=dry_run)


def _import_operators(
    store: Store,
    operators: list[dict[str, Any]],
    files: dict[str, Any],
    *,
    trust_operator: bool,
    force: bool,
    dry_run: bool,
) -> ImportPlan:
    """Import files of several operators (an nsc home: ``stores/<operator>/...``), each operator with its
    own accounts, users and seeds, all in one unit of work (all or nothing); only the Store's chosen
    operator (``--operator``) when it has one."""
    names = [o["name"] for o in operators]
    for o in operators:
        check_name(o["name"], "operator name")
    if len(set(names)) != len(names):
        raise StoreError(f"the import holds two different operators named alike ({', '.join(sorted(names))})")
    groups: list[dict[str, Any]] = [
        {"kind": "files", "operator": {"name": o["name"], "jwt": o["jwt"]}, "accounts": [], "users": [], "seeds": []}
        for o in operators
    ]
    keys: dict[str, int] = {}  # public key named by a JWT of the import -> its operator's group
    for i, o in enumerate(operators):
        for k in (o["claims"].subject, *o["claims"].signing_keys):
            keys[k] = i
    for a in files["accounts"]:
        acc = decode(a["jwt"], AccountClaims)
        if acc.issuer not in keys:
            raise StoreError(
                f"account {acc.name or acc.subject} is signed by {acc.issuer}, which is none of the import's "
                f"operators ({', '.join(names)}) nor one of their signing keys"
            )
        i = keys[acc.issuer]
        groups[i]["accounts"].append(a)
        for k in (acc.subject, *acc.signing_key_map()):
            keys.setdefault(k, i)
    for u in files["users"]:
        claims = decode(u["jwt"], UserClaims)
        acc_key = claims.issuer_account or claims.issuer
        if acc_key not in keys:
            raise StoreError(f"user {claims.name} belongs to account {acc_key}, which is not in the import")
        groups[keys[acc_key]]["users"].append(u)
        keys.setdefault(claims.subject, keys[acc_key])
    chosen = store.selected_operator
    for seed in files["seeds"]:
        pub = _keypair(seed).public_key
        if pub in keys:
            groups[keys[pub]]["seeds"].append(seed)
        elif not chosen:
            raise StoreError(f"the import holds a seed for {pub}, which no imported JWT names")
    if chosen:
        if chosen not in names:
            raise FieldError(
                "--operator",
                f"no operator named {chosen!r} in the import",
                message=f"the import holds operators {', '.join(names)}, none named {chosen!r}",
            )
        groups = [groups[names.index(chosen)]]
    total = ImportPlan(operators=[g["operator"]["name"] for g in groups])
    with store.lock(), nullcontext() if dry_run else store.transaction():
        for g in groups:  # an error in any of them: nothing of the import is written
            plan = _import_payload(store, g, trust_operator=trust_operator, force=force, dry_run=dry_run)
            name = plan.operator_name

            def of(labels: list[str], name: str = name) -> list[str]:
                return [x if x.startswith(("operator ", "key ")) else f"{x} of operator {name}" for x in labels]

            total.added += of(plan.added)
            total.unchanged += of(plan.unchanged)
            total.replaced += of(plan.replaced)
            total.new_operator = total.new_operator or plan.new_operator
            total.operator_name = total.operator_name or plan.operator_name
    return total


def read_secret(env: Optional[str] = None, file: Optional[str] = None) -> Optional[str]:
    """A passphrase from an environment variable or a file (never from the command line)."""
    if env:
        v = os.environ.get(env)
        if v is None:
            raise StoreError(f"environment variable {env} is not set")
        return v
    if file:
        try:
            return read_text(Path(file), StoreError).rstrip("\n")
        except OSError as exc:
            raise StoreError(f"cannot read passphrase file {file}: {exc.strerror}") from None
    return None
