"""Choosing the address a node advertises to its peers, and saying why.

Order: an explicit address (a public IP or name the user gives) wins; else a Tailscale address
(100.64.0.0/10) when this machine has one; else the first private LAN address; else loopback.
Detection reads the machine's own interface list (``ip -j addr``, then ``hostname -I``); it sends
nothing on the network.

    >>> choose_advertise([("eth0", "192.168.1.20"), ("tailscale0", "100.101.1.2")])
    ('100.101.1.2', 'Tailscale address on tailscale0 (100.64.0.0/10)')

Reaching a listener: :func:`dial_host` turns the host a server listens on into one this machine can
dial (a wildcard becomes loopback), and :func:`url` writes it into a URL (IPv6 in brackets).

    >>> url("nats", dial_host("0.0.0.0"), 4222)
    'nats://127.0.0.1:4222'
    >>> url("http", dial_host("fd00::1"), 8222)
    'http://[fd00::1]:8222'
"""

from __future__ import annotations

import ipaddress
import json
import re
from typing import Optional

from dchat_ops.errors import SEED_PATTERN, ConfigError

__all__ = [
    "LOOPBACK",
    "TAILSCALE_NET",
    "WILDCARD_HOSTS",
    "check_advertise",
    "check_host",
    "check_url",
    "choose_advertise",
    "dial_host",
    "host_of",
    "host_port",
    "is_ip",
    "is_wildcard",
    "listeners_overlap",
    "local_addresses",
    "url",
]

TAILSCALE_NET = ipaddress.ip_network("100.64.0.0/10")
LOOPBACK = "127.0.0.1"
# Listen hosts that mean "every address": nats-server (Go) opens "::" dual-stack, so IPv4 loopback reaches it
# too, and 127.0.0.1 is among the names every node certificate carries.
WILDCARD_HOSTS = ("", "0.0.0.0", "::", "[::]", "*")


def _unbracket(host: str) -> str:
    h = (host or "").strip()
    if h.startswith("[") and h.endswith("]"):
        return h[1:-1]
    return h


_LABEL = re.compile(r"^(?!-)[A-Za-z0-9-]{1,63}(?<!-)\Z", re.ASCII)


def is_ip(text: str) -> bool:
    """True for an IPv4 or IPv6 address (no brackets)."""
    try:
        ipaddress.ip_address(text)
        return True
    except ValueError:
        return False


def _is_host_name(text: str) -> bool:
    name = text[:-1] if text.endswith(".") else text
    return 0 < len(name) <= 253 and all(_LABEL.match(label) for label in name.split("."))


def check_host(host: str, what: str = "host") -> str:
    """``host`` when it is an IP address (IPv6 bare or in brackets) or a valid host name; else ConfigError.

    >>> check_host("0.0.0.0"), check_host("[fd00::1]"), check_host("node-1.example.org")
    ('0.0.0.0', '[fd00::1]', 'node-1.example.org')
    """
    h = host if isinstance(host, str) else ""
    if SEED_PATTERN.search(h):  # a seed pasted in the wrong place: refused, never written into a config or JWT
        raise ConfigError(f"{what}: an nkey seed is not a host (a secret: it was not written anywhere)")
    inner = h[1:-1] if h.startswith("[") and h.endswith("]") else h
    if (inner != h and ":" in inner and is_ip(inner)) or (inner == h and (is_ip(h) or _is_host_name(h))):
        return host
    raise ConfigError(f"{what} {host!r} is not an IP address or a host name")


def check_advertise(text: str, what: str = "advertise", *, port_required: bool = True) -> str:
    """``text`` when it is ``host:port`` (port 1-65535, an IPv6 address in brackets); else ConfigError.

    With ``port_required=False`` a bare host is accepted too (the listener's port is added to it).
    """
    t = text if isinstance(text, str) else ""
    m = re.match(r"^(\[[^\]]*\]|[^:\[\]]*)(?::(\d{1,5}))?\Z", t, re.ASCII)
    if not m:
        raise ConfigError(f"{what} {text!r} is not host:port (an IPv6 address goes in brackets: [fd00::1]:7422)")
    host, port = m.group(1), m.group(2)
    check_host(host, f"{what} host")
    if port is None:
        if port_required:
            raise ConfigError(f"{what} {text!r} has no port: use host:port")
    elif not 0 < int(port) < 65536:
        raise ConfigError(f"{what} {text!r}: port {int(port)} is out of range (1-65535)")
    return text


_URL = re.compile(r"^([a-z][a-z0-9+.-]*)://(\[[^\]]*\]|[^/\[\]:@]*)(?::(\d{1,5}))?/?\Z", re.ASCII)


def check_url(url: str, schemes: tuple[str, ...], what: str = "URL", *, port_required: bool = True) -> str:
    """``url`` when it is ``scheme://host:port`` with a scheme of ``schemes``, a valid host (an IPv6 address
    in brackets) and a port 1-65535; else ConfigError.  The one parser of route, gateway, leaf and service
    URLs (the CLI, node files and specs).

    >>> check_url("nats-route://10.0.0.2:6222", ("nats-route", "nats"))
    'nats-route://10.0.0.2:6222'
    """
    u = url if isinstance(url, str) else ""
    m = _URL.match(u)
    if not m:
        raise ConfigError(f"{what}: {url!r} is not scheme://host:port")
    scheme, host, port = m.group(1), m.group(2), m.group(3)
    if scheme not in schemes:
        raise ConfigError(
            f"{what}: unknown scheme {scheme!r} in {url!r} (use {' or '.join(s + '://' for s in schemes)})"
        )
    try:
        check_host(host, "host")
    except ConfigError as exc:
        raise ConfigError(f"{what}: {url!r}: {exc}") from None
    if port is None:
        if port_required:
            raise ConfigError(f"{what}: {url!r} has no port: use scheme://host:port")
    elif not 0 < int(port) < 65536:
        raise ConfigError(f"{what}: port out of range in {url!r}")
    return url


def host_of(addr: Optional[str]) -> str:
    """The host of ``host``, ``host:port``, ``[v6]:port`` or a bare IPv6 address."""
    a = (addr or "").strip()
    if a.startswith("["):
        return a[1:].split("]", 1)[0]
    if a.count(":") == 1:
        return a.split(":", 1)[0]
    return a


def is_wildcard(host: Optional[str]) -> bool:
    """True for a listen host that means every address of the machine."""
    return (host or "").strip() in WILDCARD_HOSTS


def listeners_overlap(a: Optional[str], b: Optional[str]) -> bool:
    """True when listeners on hosts ``a`` and ``b`` share a port space: the same address, or either one
    listens on every address.  The one rule for port clashes between nodes (node add, render, specs)."""
    return is_wildcard(a) or is_wildcard(b) or dial_host(a) == dial_host(b)


def dial_host(listen_host: Optional[str]) -> str:
    """The host to dial for a server listening on ``listen_host``.

    A wildcard (``""``, ``0.0.0.0``, ``::``, ``[::]``) and ``localhost`` become ``127.0.0.1``; a specific
    address or name is kept as it is (without IPv6 brackets).
    """
    h = _unbracket(listen_host or "")
    if is_wildcard(h) or h.lower() == "localhost":
        return LOOPBACK
    return h


def _bracket(host: str) -> str:
    h = _unbracket(host)
    return f"[{h}]" if ":" in h else h


def host_port(host: str, port: int) -> str:
    """``host:port``, with an IPv6 address in brackets."""
    return f"{_bracket(host)}:{int(port)}"


def url(scheme: str, host: str, port: int) -> str:
    """``scheme://host:port`` for a dialable ``host`` (IPv6 in brackets)."""
    return f"{scheme}://{host_port(host, port)}"


def local_addresses() -> list[tuple[str, str]]:
    """(interface, IPv4 address) pairs of this machine."""
    import shutil  # (here: most commands never look for the machine's addresses)
    import subprocess

    ip = shutil.which("ip")
    if ip:
        try:
            out = subprocess.run([ip, "-j", "-4", "addr", "show"], capture_output=True, text=True, timeout=5)
            pairs = []
            for link in json.loads(out.stdout or "[]"):
                for a in link.get("addr_info", []):
                    if a.get("family") == "inet" and a.get("local"):
                        pairs.append((link.get("ifname", "?"), a["local"]))
            if pairs:
                return pairs
        except (OSError, ValueError, subprocess.SubprocessError):
            pass
    hn = shutil.which("hostname")
    if hn:
        try:
            out = subprocess.run([hn, "-I"], capture_output=True, text=True, timeout=5)
            return [("?", a) for a in out.stdout.split() if ":" not in a]
        except (OSError, subprocess.SubprocessError):
            pass
    return [("lo", "127.0.0.1")]


def choose_advertise(addresses: list[tuple[str, str]], explicit: Optional[str] = None) -> tuple[str, str]:
    """(address, reason) for a node to advertise."""
    if explicit:
        return explicit, "given explicitly"
    parsed = []
    for ifname, text in addresses:
        try:
            parsed.append((ifname, ipaddress.ip_address(text)))
        except ValueError:
            continue
    for ifname, a in parsed:
        if a.version == 4 and a in TAILSCALE_NET:
            return str(a), f"Tailscale address on {ifname} (100.64.0.0/10)"
    for ifname, a in parsed:
        if a.is_private and not a.is_loopback and not a.is_link_local:
            return str(a), f"LAN address on {ifname}"
    for _ifname, a in parsed:
        if a.is_loopback:
            return str(a), "no LAN address found; loopback only"
    return "127.0.0.1", "no address found; loopback only"
