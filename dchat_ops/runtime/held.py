"""What running servers hold, asked over the system account, and starting a node from the newest JWTs.

Each running node is reached on its own (:func:`dchat_ops.runtime.client.node_target`: its URL and
TLS) and asked directly (:func:`_on_nodes`), so each one either answers or is named ("no answer within
3s", "cannot connect ..."); every connect and every request is bounded by ``timeout``.
:mod:`dchat_ops.runtime.push` pushes, prunes and pulls with these sessions.

What a node holds (:func:`dchat_ops.runtime.push.pull`, :func:`catch_up`) is its own answer to
``$SYS.REQ.CLAIMS.LIST`` (the answer names its server) and, for each account it lists, the JWT in its
resolver folder, the folder that server keeps and answers lookups from.
``$SYS.REQ.ACCOUNT.<key>.CLAIMS.LOOKUP`` is not used: every full-resolver server of a cluster answers it
and the answers do not say whose they are (the asked node's own answer is usually, not always, the
first).  A JWT a server holds is taken only when it verifies against this store's operator
(:func:`dchat_ops.nsc.admin.check_account_jwt`): a server stores what it is sent with
``$SYS.REQ.CLAIMS.UPDATE`` whoever signed it.

A node starts from the newest account JWTs (:meth:`dchat_ops.runtime.supervisor.Supervisor.up`): its
config preloads the store's JWTs, and nats-server applies a preload to the resolver folder only when the
folder's copy is not newer (a larger ``iat`` wins; at an equal ``iat`` the preload does).  So before a
node starts, :func:`catch_up` asks the running peers for JWTs newer than the store's and
:func:`seed_resolver` writes those (and replaces a folder copy newer than the store's that does not
verify) into its resolver folder; :func:`confirm_resolver` checks after the start that it holds them.
Without that, a node whose store is older than its peers served the older JWT until its resolver's
first sync with the cluster, ``interval`` (2 minutes) after it started.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, TypeVar, Union

from dchat_ops._fs import atomic_write
from dchat_ops._time import format_time
from dchat_ops.config.node import Node
from dchat_ops.config.nodes import server_config
from dchat_ops.errors import DchatOpsError, JWTError, ServerError, StoreBehindError
from dchat_ops.nsc.admin import check_account_jwt
from dchat_ops.nsc.claims import OperatorClaims
from dchat_ops.nsc.jwt import decode_unverified
from dchat_ops.nsc.revoke import system_creds
from dchat_ops.nsc.store import Store
from dchat_ops.runtime.client import NodeTarget, close_quietly, node_target, run_sync

__all__ = [
    "DEFAULT_TIMEOUT",
    "STATES",
    "CatchUp",
    "catch_up",
    "catch_up_over_cluster",
    "confirm_resolver",
    "newer_on_servers",
    "require_current",
    "resolver_dir",
    "seed_resolver",
]

DEFAULT_TIMEOUT = 3.0  # seconds for each connect and each request to one node


class _Session:
    """One connection to one node, asking it requests and taking that node's own answer."""

    def __init__(self, target: NodeTarget, nc, timeout: float):
        self.target = target
        self.nc = nc
        self.timeout = timeout
        info = getattr(nc, "_server_info", None) or {}
        self.names = {target.server_name, info.get("server_name")} - {None, ""}
        self.ids = {info.get("server_id")} - {None, ""}

    def _mine(self, answer: dict) -> bool:
        server = answer.get("server") or {}
        return server.get("name") in self.names or server.get("id") in self.ids

    async def ask(self, subject: str, payload: bytes = b"", *, any_answer: bool = False) -> dict:
        """This node's answer (parsed JSON, or ``{"raw": text}``); :class:`ServerError` when none comes in time.

        Servers of a cluster all answer the claims subjects; only the answer of the node asked is kept
        (``any_answer`` takes the first, for replies that do not name their server).
        """
        inbox = self.nc.new_inbox()
        sub = await self.nc.subscribe(inbox)
        try:
            await self.nc.publish(subject, payload, reply=inbox)
            deadline = time.monotonic() + self.timeout
            while True:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                try:
                    msg = await sub.next_msg(timeout=left)
                except Exception:  # nats-py's timeout, or the connection went away
                    break
                try:
                    answer = json.loads(msg.data)
                except ValueError:
                    answer = {"raw": msg.data.decode(errors="replace")}
                if not isinstance(answer, dict):
                    answer = {"raw": msg.data.decode(errors="replace")}
                if any_answer or "raw" in answer or self._mine(answer):
                    return answer
        finally:
            try:
                await sub.unsubscribe()
            except Exception:  # the connection is gone already
                pass
        raise ServerError(f"no answer within {self.timeout:g}s")

    async def all_answers(self, subject: str, payload: bytes = b"", *, wait: float) -> list[bytes]:
        """Every answer that comes within ``wait`` seconds (every server of the cluster may answer)."""
        inbox = self.nc.new_inbox()
        sub = await self.nc.subscribe(inbox)
        out: list[bytes] = []
        try:
            await self.nc.publish(subject, payload, reply=inbox)
            deadline = time.monotonic() + wait
            while (left := deadline - time.monotonic()) > 0:
                try:
                    out.append((await sub.next_msg(timeout=left)).data)
                except Exception:  # nats-py's timeout, or the connection went away
                    break
        finally:
            try:
                await sub.unsubscribe()
            except Exception:  # the connection is gone already
                pass
        return out


_T = TypeVar("_T")


async def _on_node(
    target: NodeTarget, creds: str, timeout: float, work: Callable[[_Session], Awaitable[_T]]
) -> Union[_T, DchatOpsError]:
    """Connect to one node (bounded) and run ``work(session)``; a :class:`DchatOpsError` is returned, not raised."""
    try:
        nc = await target.connect(creds_text=creds, timeout=timeout, allow_reconnect=False, max_reconnect_attempts=0)
    except DchatOpsError as exc:
        return exc
    try:
        return await work(_Session(target, nc, timeout))
    except DchatOpsError as exc:
        return exc
    except Exception as exc:  # the connection failed under us: name the node, never a traceback
        return ServerError(f"{type(exc).__name__}: {exc}")
    finally:
        await close_quietly(nc)


def _on_nodes(
    store: Store, nodes: list[Node], creds: str, timeout: float, work: Callable[[_Session], Awaitable[_T]]
) -> list[tuple[str, Union[_T, DchatOpsError]]]:
    """Run ``work`` on every node of ``nodes`` at once: (server name, result or error) per node, in order."""
    targets: list[tuple[str, Union[NodeTarget, DchatOpsError]]] = []
    for node in nodes:
        try:
            targets.append((node.server_name, node_target(store, node)))
        except DchatOpsError as exc:  # e.g. TLS on the node but no CA in the store
            targets.append((node.server_name, exc))

    async def run_all() -> list[Union[_T, DchatOpsError]]:
        async def one(t: Union[NodeTarget, DchatOpsError]) -> Union[_T, DchatOpsError]:
            return t if isinstance(t, DchatOpsError) else await _on_node(t, creds, timeout, work)

        return await asyncio.gather(*(one(t) for _, t in targets))

    results = run_sync(run_all)
    return list(zip([n for n, _ in targets], results, strict=True))


def _message(exc: DchatOpsError) -> str:
    text = str(exc)
    return text if text.startswith(("no answer", "cannot connect")) else f"cannot connect: {text}"


def _listed(answer: dict) -> list[str]:
    data = answer.get("data")
    return [a for a in data if isinstance(a, str)] if isinstance(data, list) else []


# --- what the servers hold -------------------------------------------------------------------------------


def resolver_dir(store: Store, node: Node) -> Path:
    """The folder where a node's full resolver keeps its account JWTs (``<public key>.jwt``), as its config says."""
    return Path(server_config(store, node).resolver.dir)


def _read_jwt(path: Path, tries: int = 5) -> str:
    """The JWT in a resolver file ('' when there is none).  The server rewrites its files in place, so a
    read counts once two reads in a row agree (at most ``tries`` reads)."""
    last: Optional[str] = None
    for _ in range(tries):
        try:
            text = path.read_text().strip()
        except (OSError, UnicodeDecodeError):  # not there (yet, or any more), or half written
            text = ""
        if text == last:
            return text
        last = text
    return last or ""


def _held_by(store: Store, nodes: list[Node], timeout: float, results: list[dict]) -> dict[str, dict[str, str]]:
    """Account public key -> {server: JWT} for what each of ``nodes`` holds; one row per node in ``results``.

    Each node is asked on its own (its own answer to ``$SYS.REQ.CLAIMS.LIST``); the JWT of each account it
    lists is read from its resolver folder.  A node that cannot be reached or does not answer gets a row with
    ``ok`` False and adds nothing.
    """
    folders: dict[str, Optional[Path]] = {}
    for node in nodes:
        try:
            folders[node.id] = resolver_dir(store, node)
        except DchatOpsError:  # its config cannot be made now: it is asked all the same, its folder unread
            folders[node.id] = None
    try:
        creds = system_creds(store)
    except DchatOpsError as exc:  # e.g. no seed to sign a system user with: nobody can be asked
        results.extend({"server": n.server_name, "ok": False, "message": f"not asked: {exc}"} for n in nodes)
        return {}

    async def fetch(session: _Session) -> dict[str, str]:
        folder = folders[session.target.node_id]
        listed = _listed(await session.ask("$SYS.REQ.CLAIMS.LIST"))
        return {acc: _read_jwt(folder / f"{acc}.jwt") if folder is not None else "" for acc in listed}

    held: dict[str, dict[str, str]] = {}
    for server, out in _on_nodes(store, nodes, creds, timeout, fetch):
        if isinstance(out, DchatOpsError):
            results.append({"server": server, "ok": False, "message": _message(out)})
            continue
        results.append({"server": server, "ok": True, "message": f"{len(out)} accounts"})
        for acc_id, token in out.items():
            held.setdefault(acc_id, {})[server] = token
    return held


# the states of one server's JWT for one account, against the store's; the order is the one an account row
# takes its state from (the first that any server is in)
STATES = ("refused", "server newer", "differs", "store newer", "missing", "not in store", "same")


def _compare(op: OperatorClaims, key: str, mine: Optional[tuple[str, int]], token: str) -> tuple[str, int, str]:
    """(state, iat, message) of a server's JWT ``token`` for account ``key`` against the store's (token, iat)."""
    if not token:
        return "missing", 0, ""
    if mine is not None and token == mine[0]:
        return "same", mine[1], ""
    try:
        claims = check_account_jwt(op, token, key)
    except JWTError as exc:
        return "refused", 0, f"not this operator's JWT of the account: {exc}"
    if mine is None:
        return "not in store", claims.issued_at, ""
    if claims.issued_at > mine[1]:
        return "server newer", claims.issued_at, ""
    if claims.issued_at < mine[1]:
        return "store newer", claims.issued_at, ""
    return "differs", claims.issued_at, "another JWT issued in the same second as the store's"


def _name_in(token: str) -> str:
    try:
        return decode_unverified(token).name
    except DchatOpsError:
        return ""


def _newest(
    candidates: list[tuple[int, str, str]], key: str, name: str, refused: list[dict]
) -> Optional[tuple[str, int, list[str]]]:
    """The newest of the servers' JWTs (iat, token, server): (token, iat, the servers holding it).

    None when two different JWTs share the newest ``iat``: neither is taken, and a row in ``refused`` says so.
    """
    best = max(iat for iat, _, _ in candidates)
    holders: dict[str, list[str]] = {}
    for iat, token, server in candidates:
        if iat == best:
            holders.setdefault(token, []).append(server)
    if len(holders) > 1:
        everyone = ",".join(sorted(s for group in holders.values() for s in group))
        message = "servers hold different JWTs issued in the same second; neither is taken"
        refused.append({"account": key, "name": name, "server": everyone, "message": message})
        return None
    token, servers = next(iter(holders.items()))
    return token, best, sorted(servers)


# --- a node starts from the newest JWTs -------------------------------------------------------------------


@dataclass
class CatchUp:
    """What the running peers of a node hold newer than the store, and what its resolver folder starts from.

    ``peers``: one row per peer asked (``server``, ``ok``, ``message``); ``caught_up``: the accounts taken
    from peers (``account``, ``name``, ``from``: the peers holding that JWT, ``issued_at``); ``refused``: peer
    JWTs not taken (they do not verify, or two differ in the same second); ``kept``: accounts whose copy in
    the node's own resolver folder is newer still, and verified; ``replaced``: folder copies that did not
    verify (another operator's, or signed by a key the operator dropped), replaced.  ``tokens`` (account key -> JWT) is what the node must hold.
    """

    node: str
    peers: list[dict] = field(default_factory=list)
    caught_up: list[dict] = field(default_factory=list)
    refused: list[dict] = field(default_factory=list)
    kept: list[dict] = field(default_factory=list)
    replaced: list[dict] = field(default_factory=list)
    tokens: dict[str, str] = field(default_factory=dict)
    written: list[str] = field(default_factory=list)  # account keys whose resolver file was written

    def to_dict(self) -> dict:
        return {
            "node": self.node,
            "peers": self.peers,
            "caught_up": self.caught_up,
            "refused": self.refused,
            "kept": self.kept,
            "replaced": self.replaced,
        }


def catch_up(store: Store, node_id: str, peers: list[Node], *, timeout: float = DEFAULT_TIMEOUT) -> CatchUp:
    """Ask ``peers`` (the running full-resolver nodes of the store other than ``node_id``) for account JWTs
    newer than the store's.  For each account of the store, the newest verified one (a larger ``iat``) is in
    ``tokens``.

    Every peer is asked at once; each connect and request is bounded by ``timeout``; a peer that does not
    answer is named in ``peers``.  Nothing is written.
    """
    report = CatchUp(node_id)
    if not peers:
        return report
    held = _held_by(store, peers, timeout, report.peers)
    op = store.operator()
    for ent in store.accounts(op.name):
        candidates: list[tuple[int, str, str]] = []
        for server, token in sorted(held.get(ent.public_key, {}).items()):
            state, iat, message = _compare(op.claims, ent.public_key, (ent.token, ent.claims.issued_at), token)
            if state == "refused":
                report.refused.append(
                    {"account": ent.public_key, "name": ent.name, "server": server, "message": message}
                )
            elif state == "server newer":
                candidates.append((iat, token, server))
        newest = _newest(candidates, ent.public_key, ent.name, report.refused) if candidates else None
        if newest is not None:
            token, iat, servers = newest
            report.tokens[ent.public_key] = token
            report.caught_up.append({"account": ent.public_key, "name": ent.name, "from": servers, "issued_at": iat})
    return report


def seed_resolver(store: Store, node: Node, report: CatchUp) -> None:
    """Before ``node`` starts: make its resolver folder hold, for every account of the store, the newest JWT.

    That is the peers' newer JWT from ``report``, else the store's, unless the folder's own copy is newer still
    and verifies (then it is kept).  Any other copy in the folder is replaced, also one that does not verify
    (the preload would lose to it when its ``iat`` is larger).  With no copy in the folder and nothing newer
    than the store, nothing is written: the preload writes the store's.  Afterwards ``report.tokens`` is what
    the node must hold, and ``report.written`` the accounts whose file was written.
    """
    folder = resolver_dir(store, node)
    op = store.operator()
    caught = {c["account"]: c["issued_at"] for c in report.caught_up}
    for ent in store.accounts(op.name):
        key = ent.public_key
        want = report.tokens.get(key, ent.token)
        want_iat = caught.get(key, ent.claims.issued_at)
        report.tokens[key] = want
        path = folder / f"{key}.jwt"
        have = _read_jwt(path)
        if have == want or (not have and key not in caught):
            continue
        if have:
            try:
                have_iat = check_account_jwt(op.claims, have, key).issued_at
            except JWTError as exc:
                report.replaced.append({"account": key, "name": ent.name, "message": str(exc)})
            else:
                if have_iat > want_iat:
                    report.kept.append({"account": key, "name": ent.name, "issued_at": have_iat})
                    report.tokens[key] = have
                    continue
        atomic_write(path, want, private=True)  # as nats-server keeps its resolver files: 0600 in 0700
        report.written.append(key)


def confirm_resolver(store: Store, node: Node, report: CatchUp, *, timeout: float = DEFAULT_TIMEOUT) -> None:
    """After ``node`` started: it holds every JWT of ``report.tokens`` (or a newer one that verifies).

    Its resolver folder is read; when :func:`seed_resolver` wrote any file, the node is also asked
    (``$SYS.REQ.CLAIMS.LIST``, its own answer, bounded by ``timeout``) whether it lists those accounts.
    Raises :class:`ServerError` naming what it does not hold.
    """
    folder = resolver_dir(store, node)
    op = store.operator()
    short = []
    for key, want in report.tokens.items():
        have = _read_jwt(folder / f"{key}.jwt")
        if have == want:
            continue
        try:
            if (
                have
                and check_account_jwt(op.claims, have, key).issued_at > check_account_jwt(op.claims, want).issued_at
            ):
                continue  # something newer reached it since it started
        except JWTError:
            pass
        short.append(key)
    if not short and report.written:
        results: list[dict] = []
        listed = _held_by(store, [node], timeout, results)
        if not results[0]["ok"]:
            raise ServerError(f"node {node.id}: cannot confirm the account JWTs it holds: {results[0]['message']}")
        short = [k for k in report.written if k not in listed]
    if short:
        names = {e.public_key: e.name for e in store.accounts(op.name)}
        raise ServerError(
            f"node {node.id} does not hold the newest JWT of account(s) {', '.join(names.get(k, k) for k in short)}"
        )


# --- a change made on an older store would undo a newer one ---------------------------------------------


def newer_on_servers(
    store: Store, names: list[str], nodes: list[Node], *, timeout: float = DEFAULT_TIMEOUT
) -> list[dict]:
    """The accounts of ``names`` of which one of ``nodes`` (running, full resolver) holds a JWT that
    verifies and is newer than the store's: ``account``, ``name``, ``server``, ``issued_at``,
    ``store_issued_at``.  A node that does not answer adds nothing (its row says nothing is known)."""
    if not nodes or not names:
        return []
    op = store.operator()
    mine = {}
    for name in names:
        ent = store.account(name, op.name)
        mine[ent.public_key] = ent
    held = _held_by(store, nodes, timeout, [])
    out = []
    for key, ent in mine.items():
        for server, token in sorted(held.get(key, {}).items()):
            state, iat, _ = _compare(op.claims, key, (ent.token, ent.claims.issued_at), token)
            if state == "server newer":
                out.append(
                    {
                        "account": key,
                        "name": ent.name,
                        "server": server,
                        "issued_at": iat,
                        "store_issued_at": ent.claims.issued_at,
                    }
                )
    return out


def require_current(store: Store, names: list[str], nodes: list[Node], *, timeout: float = DEFAULT_TIMEOUT) -> None:
    """Refuse (:class:`StoreBehindError`) when a running server holds a newer JWT of one of ``names``
    than the store: a change made on the store's older JWT would undo the newer one everywhere."""
    behind = newer_on_servers(store, names, nodes, timeout=timeout)
    if not behind:
        return
    what = "; ".join(
        f"{b['server']} holds a JWT of account {b['name']} issued {format_time(b['issued_at'])} "
        f"(the store's: {format_time(b['store_issued_at'])})"
        for b in behind
    )
    raise StoreBehindError(
        f"the store is behind the running servers: {what}; a change made here would undo theirs "
        "(a revocation made from another home, say): run 'dchat-ops pull --update', then make the change again",
        behind=behind,
    )


# --- a node of this store that joined servers of other stores ----------------------------------------------

CLUSTER_WAIT = 0.3  # seconds to collect the cluster's answers to one account lookup


def catch_up_over_cluster(store: Store, node: Node, report: CatchUp, *, timeout: float = DEFAULT_TIMEOUT) -> None:
    """After ``node`` started and joined its cluster: ask the cluster, through the node, for each account
    of the store (``$SYS.REQ.ACCOUNT.<key>.CLAIMS.LOOKUP``: every full-resolver server that holds it
    answers), and send the node the newest JWT that verifies when it is newer than the node's own.

    This reaches peers that are not nodes of this store (another machine's); peers of this store were
    asked before the start (:func:`catch_up`).  What was taken goes into ``report.caught_up`` with
    ``from: ["cluster"]``; a node that does not answer is named in ``report.peers``.
    """
    op = store.operator()
    folder = resolver_dir(store, node)
    # the system account last: its newer JWT may revoke the very user asking (a revoked device's)
    accounts = sorted(store.accounts(op.name), key=lambda ent: ent.public_key == op.claims.system_account)

    async def work(session: _Session) -> list[dict]:
        taken = []
        answers = await asyncio.gather(
            *(
                session.all_answers(f"$SYS.REQ.ACCOUNT.{ent.public_key}.CLAIMS.LOOKUP", wait=CLUSTER_WAIT)
                for ent in accounts
            )
        )
        for ent, raws in zip(accounts, answers, strict=True):
            best: Optional[tuple[int, str]] = None
            for raw in raws:
                token = raw.decode(errors="replace").strip()
                try:
                    iat = check_account_jwt(op.claims, token, ent.public_key).issued_at
                except JWTError:
                    continue  # not this operator's JWT of the account (or not a JWT): never taken
                if best is None or iat > best[0]:
                    best = (iat, token)
            have = _read_jwt(folder / f"{ent.public_key}.jwt") or report.tokens.get(ent.public_key, ent.token)
            try:
                have_iat = check_account_jwt(op.claims, have, ent.public_key).issued_at
            except JWTError:
                have_iat = 0
            if best is None or best[0] <= have_iat:
                continue
            answer = await session.ask("$SYS.REQ.CLAIMS.UPDATE", best[1].encode())
            if not (answer.get("data") or {}).get("code") == 200:
                raise ServerError(f"node {node.id} did not take the newer JWT of account {ent.name}: {answer}")
            report.tokens[ent.public_key] = best[1]
            taken.append({"account": ent.public_key, "name": ent.name, "from": ["cluster"], "issued_at": best[0]})
        return taken

    try:
        creds = system_creds(store)
    except DchatOpsError as exc:
        report.peers.append({"server": "cluster", "ok": False, "message": f"not asked: {exc}"})
        return
    [(server, out)] = _on_nodes(store, [node], creds, timeout, work)
    if isinstance(out, DchatOpsError):
        report.peers.append({"server": f"cluster (through {server})", "ok": False, "message": _message(out)})
        return
    report.caught_up.extend(out)
