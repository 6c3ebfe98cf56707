"""A public node: monitoring stays on loopback unless asked, every listener advertises the given
address, and an address that a server would refuse is refused when it is given."""

import socket
import urllib.request

import pytest
from conftest import wait_for

from dchat_ops import provision
from dchat_ops._cli.main import cli
from dchat_ops._cli.output import run_cli
from dchat_ops.config import nodes
from dchat_ops.config.node import NodeFile
from dchat_ops.hosts import local_addresses
from dchat_ops.natsbin import free_port


def _ports(n: int) -> list[int]:
    out: list[int] = []
    while len(out) < n:
        p = free_port()
        if p not in out:
            out.append(p)
    return out


def test_public_node_advertises_every_listener_and_keeps_monitoring_on_loopback(store):
    gw, leaf, ws = _ports(3)
    r = nodes.add_node(
        store,
        "pub",
        host="0.0.0.0",
        advertise="203.0.113.7",
        gateway_port=gw,
        leaf_port=leaf,
        websocket_port=ws,
    )
    n = r.node
    text = nodes.render_node(store, "pub").read_text()  # nats-server -t accepts it
    assert f'http: "127.0.0.1:{n.monitor_port}"' in text
    assert f'client_advertise: "203.0.113.7:{n.client_port}"' in text
    for port in (n.cluster["port"], gw, leaf, ws):
        assert f'advertise: "203.0.113.7:{port}"' in text, port
    assert text.count("advertise:") == 5  # client, cluster, gateway, leaf, websocket
    assert len([m for m in r.messages if m.startswith("advertising")]) == 5


def test_monitoring_elsewhere_only_when_asked(store):
    nodes.add_node(store, "mon", host="0.0.0.0", advertise="203.0.113.7", monitor_host="0.0.0.0")
    n = NodeFile.load(store, "mon").node
    assert f'http: "0.0.0.0:{n.monitor_port}"' in nodes.render_node(store, "mon").read_text()


def test_public_node_monitoring_answers_on_loopback_only(store, supervised):
    nodes.add_node(store, "pub", host="0.0.0.0", advertise="203.0.113.7")
    n = NodeFile.load(store, "pub").node
    supervised("pub")
    varz = wait_for(lambda: _get(f"http://127.0.0.1:{n.monitor_port}/varz"))
    assert varz and b'"server_name": "pub"' in varz.replace(b'":"', b'": "')
    others = [a for _, a in local_addresses() if not a.startswith("127.")]
    if not others:
        pytest.skip("this machine has no address but loopback")
    # the client port is public, the monitoring port is not
    with socket.create_connection((others[0], n.client_port), timeout=3):
        pass
    with pytest.raises(OSError):
        socket.create_connection((others[0], n.monitor_port), timeout=3).close()


def _get(u: str):
    try:
        with urllib.request.urlopen(u, timeout=2) as resp:
            return resp.read()
    except OSError:
        return None


@pytest.mark.parametrize("flag", ["--advertise", "--monitor-host"])
def test_ipv6_without_brackets_refused_by_node_add(home, store, capsys, flag):
    value = "fd00::1:7422" if flag == "--advertise" else "fd00::1::"
    code = run_cli(cli, ["--home", str(home), "node", "add", "n1", "--host", "0.0.0.0", flag, value])
    err = capsys.readouterr().err
    assert code == 2, err
    assert flag in err and ("brackets" in err or "not an IP address" in err), err
    assert not (store.home / "nodes" / "n1.yaml").exists()


def test_ipv6_advertise_without_brackets_refused_by_spec(tmp_path):
    p = tmp_path / "s.yaml"
    p.write_text('version: 1\nnodes:\n  - {id: n1, host: "::", advertise: "fd00::1"}\n')
    with pytest.raises(provision.SpecError, match=r"s.yaml:3: nodes\[0\].advertise: .*brackets: \[fd00::1\]"):
        provision.load_spec(p)


@pytest.mark.parametrize(
    "flag, value",
    [("--seed-route", "nats-route://a b:6222"), ("--gateway", "asia=http://h:7222"), ("--leaf-of", "nats-leaf://h")],
)
def test_bad_urls_are_usage_errors(home, store, capsys, flag, value):
    code = run_cli(cli, ["--home", str(home), "node", "add", "n1", flag, value])
    err = capsys.readouterr().err
    assert code == 2 and flag in err, err
    assert not (store.home / "nodes" / "n1.yaml").exists()
