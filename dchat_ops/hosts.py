"""Choosing the address a node advertises to its peers, and saying why.

Order: an explicit address (a public IP or name the user gives) wins; else a Tailscale address
(100.64.0.0/10) when this machine has one; else the first private LAN address; else loopback.
Detection reads the machine's own interface list (``ip -j addr``, then ``hostname -I``); it sends
nothing on the network.

    >>> choose_advertise([("eth0", "192.168.1.20"), ("tailscale0", "100.101.1.2")])
    ('100.101.1.2', 'Tailscale address on tailscale0 (100.64.0.0/10)')
"""

from __future__ import annotations

import ipaddress
import json
import shutil
import subprocess
from typing import Optional

__all__ = ["TAILSCALE_NET", "choose_advertise", "local_addresses"]

TAILSCALE_NET = ipaddress.ip_network("100.64.0.0/10")


def local_addresses() -> list[tuple[str, str]]:
    """(interface, IPv4 address) pairs of this machine."""
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
