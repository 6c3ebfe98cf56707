"""Rendering nats-server configs from ``config/templates/`` with jinja2, and checking them before use.

:class:`ServerConfig` is everything one server needs; :func:`render` turns it into the text of a
nats-server config; :func:`semantic_check` makes the checks ``nats-server -t`` does not make
(it only parses), and :func:`write_and_check` writes the file atomically after both passed.

    >>> cfg = standalone_config(store, resolver="full", data_dir=Path("/var/lib/dchat"))
    >>> text = render(cfg)
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Optional

import jinja2

from dchat_ops._fs import atomic_write, ensure_dir
from dchat_ops.errors import ConfigError
from dchat_ops.hosts import host_port
from dchat_ops.natsbin import check_config
from dchat_ops.nsc.claims import OperatorClaims
from dchat_ops.nsc.store import Store

__all__ = ["DURATION", "Resolver", "ServerConfig", "render", "semantic_check", "standalone_config", "write_and_check"]

DURATION = re.compile(r"^\d+(\.\d+)?(ns|us|µs|ms|s|m|h)(\d+(\.\d+)?(ns|us|µs|ms|s|m|h))*$")


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
    """One nats-server in operator mode.  Optional sections are plain dicts (see the template)."""

    server_name: str
    operator_jwt: str
    system_account: str
    resolver: Resolver
    host: str = "127.0.0.1"
    port: int = 4222
    http_host: str = "127.0.0.1"
    http_port: Optional[int] = None
    max_payload: Optional[int] = None
    jetstream: Optional[dict] = None
    cluster: Optional[dict] = None
    gateway: Optional[dict] = None
    leafnodes: Optional[dict] = None
    websocket: Optional[dict] = None
    tls: Optional[dict] = None


def _q(value) -> str:
    """A double-quoted nats-server config string (JSON escaping is valid there)."""
    return json.dumps(str(value))


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


def _env() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FunctionLoader(_load_template),
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
        undefined=jinja2.ChainableUndefined,  # optional keys of section dicts read as empty
        autoescape=False,
    )
    env.filters["q"] = _q
    env.globals["tls_block"] = _tls_block
    env.globals["host_port"] = host_port
    return env


def _load_template(name: str) -> str:
    try:
        return resources.files("dchat_ops.config").joinpath("templates").joinpath(name).read_text()
    except (FileNotFoundError, ModuleNotFoundError):
        raise ConfigError(f"template {name} is missing from the installation") from None


_ENV: Optional[jinja2.Environment] = None


def render(cfg: ServerConfig, header: str = "") -> str:
    """The text of a nats-server config for ``cfg``."""
    global _ENV
    if _ENV is None:
        _ENV = _env()
    return _ENV.get_template("server.conf.j2").render(c=cfg, header=header)


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
