"""Rendering nats-server configs, and checking them before use.

:class:`ServerConfig` is everything one server needs; :func:`render` turns it into the text of a
nats-server config; :func:`semantic_check` makes the checks ``nats-server -t`` does not make
(it only parses), and :func:`write_and_check` writes the file atomically after both passed.

    >>> cfg = standalone_config(store, resolver="full", data_dir=Path("/var/lib/dchat"))
    >>> text = render(cfg)
"""

from __future__ import annotations

import os
import re
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from dchat_ops._fs import atomic_write, ensure_dir
from dchat_ops.errors import ConfigError
from dchat_ops.hosts import host_port
from dchat_ops.natsbin import check_config
from dchat_ops.nsc.claims import OperatorClaims
from dchat_ops.nsc.store import Store

__all__ = ["DURATION", "Resolver", "ServerConfig", "render", "semantic_check", "standalone_config", "write_and_check"]

DURATION = re.compile(r"^\d+(\.\d+)?(ns|us|µs|ms|s|m|h)(\d+(\.\d+)?(ns|us|µs|ms|s|m|h))*\Z", re.ASCII)


@dataclass
class Resolver:
    """``full`` (nats resolver: accounts kept in ``dir``, pushable) or ``memory`` (preload only)."""

    type: str = "full"
    dir: str = ""
    allow_delete: bool = False
    interval: str = "2m"
    preload: dict[str, str] = field(default_factory=dict)


@dataclass
class ServerConfig:
    """One nats-server in operator mode.  Optional sections are plain dicts (see :func:`render`)."""

    server_name: str
    operator_jwt: str
    system_account: str
    resolver: Resolver
    host: str = "127.0.0.1"
    port: int = 4222
    http_host: str = "127.0.0.1"
    http_port: Optional[int] = None
    client_advertise: str = ""
    max_payload: Optional[int] = None
    jetstream: Optional[dict] = None
    cluster: Optional[dict] = None
    gateway: Optional[dict] = None
    leafnodes: Optional[dict] = None
    websocket: Optional[dict] = None
    tls: Optional[dict] = None


# What nats-server's config lexer reads in a double-quoted string: any UTF-8 text as it is, and the
# escapes \xXX (one byte), \t, \n, \r, \" and \\ (not JSON's \uXXXX, \b, \f or \/).
_ESCAPES = {"\\": "\\\\", '"': '\\"', "\t": "\\t", "\n": "\\n", "\r": "\\r"}
_TO_ESCAPE = re.compile(r'[\\"\x00-\x1f\x7f]')


def _escape(match: re.Match[str]) -> str:
    c = match.group(0)
    return _ESCAPES.get(c) or f"\\x{ord(c):02x}"


def _q(value) -> str:
    """A double-quoted nats-server config string: non-ASCII text written as UTF-8, and only the escapes
    nats-server's lexer knows (see :data:`_ESCAPES`)."""
    return '"' + _TO_ESCAPE.sub(_escape, str(value)) + '"'


def _tls_block(tls: dict, indent: int = 2) -> str:
    pad = " " * indent
    lines = []
    for key in ("cert_file", "key_file", "ca_file"):
        if tls.get(key):
            lines.append(f"{pad}{key}: {_q(tls[key])}")
    if tls.get("verify"):
        lines.append(f"{pad}verify: true")
    if tls.get("insecure"):
        lines.append(
            f"{pad}# WARNING: the certificates of the peers this server dials are NOT verified: development only"
        )
        lines.append(f"{pad}insecure: true")
    if tls.get("timeout"):
        lines.append(f"{pad}timeout: {tls['timeout']}")
    return "\n".join(lines)


def render(cfg: ServerConfig, header: str = "") -> str:
    """The text of a nats-server config for ``cfg``."""
    out = [
        f"# nats-server configuration rendered by dchat-ops{' -- ' + header if header else ''}",
        "# Do not edit by hand: change the node config and run dchat-ops again.",
        f"server_name: {_q(cfg.server_name)}",
        f"host: {_q(cfg.host)}",
        f"port: {cfg.port}",
    ]
    if cfg.client_advertise:
        out.append(f"client_advertise: {_q(cfg.client_advertise)}")
    if cfg.http_port:
        out.append(f"http: {_q(host_port(cfg.http_host, cfg.http_port))}")
    if cfg.max_payload:
        out.append(f"max_payload: {cfg.max_payload}")
    if cfg.tls:
        out += ["tls {", _tls_block(cfg.tls), "}"]
    out += [
        "",
        "# operator mode: clients authenticate with JWTs signed by this operator's accounts",
        f"operator: {_q(cfg.operator_jwt)}",
        f"system_account: {_q(cfg.system_account)}",
    ]
    res = cfg.resolver
    if res.type == "memory":
        out.append("resolver: MEMORY")
    else:
        out += [
            "resolver {",
            "  type: full",
            f"  dir: {_q(res.dir)}",
            f"  allow_delete: {str(res.allow_delete).lower()}",
            f"  interval: {_q(res.interval)}",
            "}",
        ]
    out.append("resolver_preload {")
    out += [f"  {key}: {_q(token)}" for key, token in res.preload.items()]
    out.append("}")
    if cfg.jetstream:
        js = cfg.jetstream
        out += ["", "jetstream {", f"  store_dir: {_q(js.get('store_dir'))}"]
        if js.get("max_memory"):
            out.append(f"  max_memory_store: {js['max_memory']}")
        if js.get("max_file"):
            out.append(f"  max_file_store: {js['max_file']}")
        out.append("}")
    if cfg.cluster:
        out += ["", *_cluster_block(cfg.cluster)]
    if cfg.gateway:
        out += ["", *_gateway_block(cfg.gateway)]
    if cfg.leafnodes:
        out += ["", *_leafnodes_block(cfg.leafnodes)]
    if cfg.websocket:
        ws = cfg.websocket
        out += ["", "websocket {", f"  listen: {_q(ws.get('listen'))}"]
        if ws.get("advertise"):
            out.append(f"  advertise: {_q(ws['advertise'])}")
        out += ["  tls {", _tls_block(ws["tls"], 4), "  }"] if ws.get("tls") else ["  no_tls: true"]
        out.append("}")
    return "\n".join(out) + "\n"


def _qlist(values) -> str:
    return ", ".join(_q(v) for v in values)


def _nested_tls(section: dict, indent: int) -> list[str]:
    if not section.get("tls"):
        return []
    pad = " " * (indent - 2)
    return [f"{pad}tls {{", _tls_block(section["tls"], indent), f"{pad}}}"]


def _cluster_block(cl: dict) -> list[str]:
    out = ["cluster {", f"  name: {_q(cl.get('name'))}", f"  listen: {_q(cl.get('listen'))}"]
    if cl.get("advertise"):
        out.append(f"  advertise: {_q(cl['advertise'])}")
    if cl.get("no_advertise"):
        out.append("  no_advertise: true")
    if cl.get("connect_retries") is not None:
        out.append(f"  connect_retries: {cl['connect_retries']}")
    out.append("  routes: [")
    out += [f"    {_q(r)}" for r in cl.get("routes") or ()]
    out.append("  ]")
    perms = cl.get("permissions")
    if perms:
        out += [
            "  # which subjects flow into this node from the cluster (import) and out of it (export)",
            "  permissions {",
        ]
        for direction in ("import", "export"):
            rules = perms.get(direction)
            if not rules:
                continue
            out.append(f"    {direction} {{")
            out += [f"      {part}: [{_qlist(rules[part])}]" for part in ("allow", "deny") if rules.get(part)]
            out.append("    }")
        out.append("  }")
    out += _nested_tls(cl, 4)
    out.append("}")
    return out


def _gateway_block(gw: dict) -> list[str]:
    out = ["gateway {", f"  name: {_q(gw.get('name'))}", f"  listen: {_q(gw.get('listen'))}"]
    if gw.get("advertise"):
        out.append(f"  advertise: {_q(gw['advertise'])}")
    out.append("  gateways: [")
    out += [f"    {{ name: {_q(g['name'])}, urls: [{_qlist(g['urls'])}] }}" for g in gw.get("gateways") or ()]
    out.append("  ]")
    out += _nested_tls(gw, 4)
    out.append("}")
    return out


def _leafnodes_block(lf: dict) -> list[str]:
    out = ["leafnodes {"]
    if lf.get("listen"):
        out.append(f"  listen: {_q(lf['listen'])}")
    if lf.get("advertise"):
        out.append(f"  advertise: {_q(lf['advertise'])}")
    if lf.get("remotes"):
        out.append("  remotes: [")
        for r in lf["remotes"]:
            out += ["    {", f"      urls: [{_qlist(r['urls'])}]"]
            if r.get("credentials"):
                out.append(f"      credentials: {_q(r['credentials'])}")
            if r.get("account"):
                out.append(f"      account: {_q(r['account'])}")
            if r.get("disabled"):
                out.append("      disabled: true")
            out += _nested_tls(r, 8)
            out.append("    }")
        out.append("  ]")
    out += _nested_tls(lf, 4)
    out.append("}")
    return out


def semantic_check(cfg: ServerConfig) -> None:
    """What ``nats-server -t`` does not check; raises ConfigError with a clear message."""
    if not cfg.system_account:
        raise ConfigError(f"{cfg.server_name}: operator mode needs a system account")
    if cfg.system_account not in cfg.resolver.preload:
        raise ConfigError(f"{cfg.server_name}: the system account must be preloaded in the resolver")
    if cfg.resolver.type not in ("full", "memory"):
        raise ConfigError(f"{cfg.server_name}: unknown resolver type {cfg.resolver.type!r} (full or memory)")
    if cfg.resolver.type == "full":
        if not cfg.resolver.dir:
            raise ConfigError(f"{cfg.server_name}: the full resolver needs a dir")
        if not DURATION.match(cfg.resolver.interval):
            raise ConfigError(
                f'{cfg.server_name}: resolver interval {cfg.resolver.interval!r} is not a duration like "2m"'
            )
    ports = [("client", cfg.port)]
    if cfg.http_port:
        ports.append(("monitoring", cfg.http_port))
    for section in ("cluster", "gateway", "leafnodes", "websocket"):
        sec = getattr(cfg, section)
        if sec and sec.get("listen"):
            ports.append((section, _port_of(sec["listen"], f"{section} listen")))
    seen: dict[int, str] = {}
    for what, port in ports:
        if not 0 < port < 65536:
            raise ConfigError(f"{cfg.server_name}: {what} port {port} is out of range")
        if port in seen:
            raise ConfigError(f"{cfg.server_name}: {what} port {port} clashes with the {seen[port]} port")
        seen[port] = what
    if cfg.gateway:
        if not cfg.cluster:
            raise ConfigError(f"{cfg.server_name}: a gateway needs a cluster block whose name is the gateway name")
        if cfg.gateway["name"] != cfg.cluster["name"]:
            raise ConfigError(
                f"{cfg.server_name}: gateway name {cfg.gateway['name']!r} must equal cluster name {cfg.cluster['name']!r}"
            )
    if cfg.jetstream and not cfg.server_name:
        raise ConfigError("JetStream needs a server_name")


def _port_of(hostport: str, what: str) -> int:
    try:
        return int(str(hostport).rsplit(":", 1)[1])
    except (IndexError, ValueError):
        raise ConfigError(f"{what} {hostport!r} is not host:port") from None


def standalone_config(
    store: Store,
    *,
    resolver: str = "full",
    data_dir: Optional[Path] = None,
    server_name: str = "dchat-1",
    host: str = "127.0.0.1",
    port: int = 4222,
    http_port: Optional[int] = 8222,
    allow_delete: bool = False,
) -> ServerConfig:
    """A single server for the store's operator, every account preloaded."""
    op = store.operator()
    if not isinstance(op.claims, OperatorClaims):
        raise ConfigError(f"{op.path} does not hold operator claims")
    preload = {acc.public_key: acc.token for acc in store.accounts(op.name)}
    res = Resolver(type=resolver, preload=preload, allow_delete=allow_delete)
    if resolver == "full":
        base = Path(data_dir) if data_dir else store.home / "data" / server_name
        res.dir = str(base / "jwt")
    return ServerConfig(
        server_name=server_name,
        operator_jwt=op.token,
        system_account=op.claims.system_account,
        resolver=res,
        host=host,
        port=port,
        http_port=http_port,
    )


def write_and_check(
    cfg: ServerConfig,
    path: Path,
    *,
    binary: Optional[str] = None,
    header: str = "",
    force: bool = True,
    server_check: bool = True,
) -> str:
    """Check ``cfg``, render it, have nats-server parse it, then write it atomically.  Returns the text.

    ``server_check=False`` skips ``nats-server -t`` (about 50 ms), for a config that a running server is
    about to reload: the reload judges it (a rejected reload leaves the server on its old config, and
    the caller puts the old file back).  Our own checks always run.
    """
    semantic_check(cfg)
    text = render(cfg, header)
    path = Path(path)
    ensure_dir(path.parent, tighten=False)
    if not server_check:
        atomic_write(path, text, force=force)
        return text
    # a probe of its own, in the same folder (relative paths read the same) and with the same suffix:
    # two processes checking the same config at once (push and allow-sub) never share one
    try:
        # named like an atomic write's temporary file, so that the next command removes it after a kill
        fd, name = tempfile.mkstemp(prefix=f".tmp-{os.getpid()}-0-", suffix=f".check{path.suffix}", dir=path.parent)
    except OSError as exc:
        raise ConfigError(f"cannot write a probe beside {path}: {exc.strerror}") from None
    probe = Path(name)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        check_config(probe, binary)
    finally:
        probe.unlink(missing_ok=True)
    atomic_write(path, text, force=force)
    return text
