"""TLS for every link: the store's CA, node certificates, config rendering, and real nats-servers on loopback."""

import asyncio
import datetime as dt
import json
import socket
import stat

import pytest
from click.testing import CliRunner
from conftest import wait_for
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID

from dchat_ops._cli.main import Ctx
from dchat_ops._cli.tls import tls as tls_cli
from dchat_ops._fs import atomic_write
from dchat_ops.config import nodes, pki, tls
from dchat_ops.config.node import NodeFile
from dchat_ops.config.server import render
from dchat_ops.errors import ConfigError
from dchat_ops.nsc.store import Store
from dchat_ops.runtime.client import connect, refused
from dchat_ops.runtime.process import http_json
from dchat_ops.runtime.supervisor import reload_running


def url(store, nid):
    return f"nats://127.0.0.1:{NodeFile.load(store, nid).node.client_port}"


def routes_of(sup):
    return set(sup.status().data["routes"])


def rids(sup):
    _, routez = http_json(sup.monitor_url + "/routez")
    return {r["rid"] for r in routez.get("routes") or []}


def mode(path):
    return stat.S_IMODE(path.stat().st_mode)


def run_cli(store, *args):
    return CliRunner().invoke(tls_cli, list(args), obj=Ctx(str(store.home)))


def peer_serial(store, node_id, via="b"):
    """Serial of the certificate node_id's route port presents to a fresh TLS handshake (with via's route cert)."""
    port = NodeFile.load(store, node_id).node.cluster["port"]
    ctx = pki.client_ssl_context(store, node_id=via, kind="route")
    with (
        socket.create_connection(("127.0.0.1", port), timeout=3) as raw,
        ctx.wrap_socket(raw, server_hostname="127.0.0.1") as s,  # routes: TLS from the first byte
    ):
        return x509.load_der_x509_certificate(s.getpeercert(binary_form=True)).serial_number


def disk_serial(store, node_id, kind="route"):
    return x509.load_pem_x509_certificate(pki.cert_paths(store, node_id, kind)[1].read_bytes()).serial_number


def tls_cluster(store, supervised, ids=("a", "b", "c")):
    """A chain-joined cluster (each node seeds the previous one) with mutual TLS on every route."""
    pki.init_ca(store)
    sups = {}
    prev = None
    for nid in ids:
        nodes.add_node(store, nid, seed_routes=[nodes.route_url(store, prev)] if prev else [])
        tls.enable(store, nid, ["route"])
        nf = NodeFile.load(store, nid)
        nf.add_to_list(("policy", "subscribe", "allow"), "room.>")  # route imports: let chat rooms flow in
        nf.save()
        prev = nid
    for nid in ids:
        sups[nid] = supervised(nid)
    assert wait_for(lambda: all(routes_of(s) == set(ids) - {n} for n, s in sups.items()), 10), {
        n: routes_of(s) for n, s in sups.items()
    }
    return sups


async def carried(store, src, dst, subject="room.tls"):
    """A message published on node src reaches a subscriber on node dst."""
    creds = store.creds_path("dchat", "chat", "default")
    sub_nc = await connect(url(store, dst), creds)
    pub_nc = await connect(url(store, src), creds)
    try:
        sub = await sub_nc.subscribe(subject)
        await sub_nc.flush()
        for i in range(40):  # interest crosses the routes asynchronously
            await pub_nc.publish(subject, b"hello %d" % i)
            try:
                return (await sub.next_msg(timeout=0.25)).data.startswith(b"hello")
            except Exception:
                continue
        return False
    finally:
        await sub_nc.close()
        await pub_nc.close()


# --- the PKI, without servers -------------------------------------------------------------------------


def test_ca_and_node_certificates_files_names_and_usages(store):
    r = pki.init_ca(store)
    assert r["created"]
    key_path, crt_path = pki.ca_paths(store)
    assert mode(key_path) == 0o600 and mode(key_path.parent) == 0o700 and mode(crt_path) == 0o644
    assert pki.init_ca(store)["created"] is False  # kept
    assert pki.init_ca(store)["fingerprint_sha256"] == r["fingerprint_sha256"]

    nodes.add_node(store, "a")
    eku = {}
    for kind in pki.KINDS:
        d = pki.issue(store, "a", kind, sans=["chat.example.org", "10.1.2.3"])
        kpath, cpath = pki.cert_paths(store, "a", kind)
        assert mode(kpath) == 0o600 and mode(kpath.parent) == 0o700 and mode(cpath) == 0o644
        assert d["signed_by_ca"] and not d["expired"] and d["days_left"] == 397
        cert = x509.load_pem_x509_certificate(cpath.read_bytes())
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        assert set(san.get_values_for_type(x509.DNSName)) == {"a", "localhost", "chat.example.org"}
        assert {str(i) for i in san.get_values_for_type(x509.IPAddress)} == {"127.0.0.1", "10.1.2.3"}
        eku[kind] = set(cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value)
        assert "PRIVATE KEY" not in json.dumps(d)
    assert eku["route"] == {ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH}
    assert eku["server"] == {ExtendedKeyUsageOID.SERVER_AUTH}
    assert eku["client"] == {ExtendedKeyUsageOID.CLIENT_AUTH}

    listed = pki.list_certs(store)
    assert [(d["node"], d["kind"]) for d in listed] == [(None, "ca"), ("a", "server"), ("a", "client"), ("a", "route")]
    assert "PRIVATE KEY" not in json.dumps(listed)
    with pytest.raises(ConfigError, match="invalid subject alternative name"):
        pki.issue(store, "a", "server", sans=["not a name!"])

    # renewal keeps the names, changes key and serial
    old = disk_serial(store, "a")
    old_key = pki.cert_paths(store, "a", "route")[0].read_bytes()
    renewed = pki.renew(store, "a")
    assert {d["kind"] for d in renewed} == set(pki.KINDS)
    assert disk_serial(store, "a") != old and pki.cert_paths(store, "a", "route")[0].read_bytes() != old_key
    assert set(next(d for d in renewed if d["kind"] == "route")["sans"]) == {
        "a",
        "localhost",
        "chat.example.org",
        "127.0.0.1",
        "10.1.2.3",
    }

    # a new CA: the old certificates are reported as not signed by it
    pki.init_ca(store, force=True)
    assert not any(d.get("signed_by_ca") for d in pki.list_certs(store) if d["kind"] != "ca")


def test_errors_are_typed_and_never_show_key_material(store, tmp_path):
    nodes.add_node(store, "a", cluster=False)
    with pytest.raises(ConfigError, match="init-ca"):
        pki.issue(store, "a", "server")
    pki.init_ca(store)
    with pytest.raises(ConfigError, match="unknown certificate kind"):
        pki.issue(store, "a", "peer")
    with pytest.raises(ConfigError, match="no cluster section"):
        tls.enable(store, "a", ["route"])
    assert "tls" not in NodeFile.load(store, "a").doc  # nothing saved
    nf = NodeFile.load(store, "a")
    nf.set(("tls",), {"client": True})
    nf.save()
    with pytest.raises(ConfigError, match="tls issue server --node a"):
        nodes.server_config(store, nf.node)  # certificate not issued yet
    nf.set(("tls",), {"client": "maybe"})
    with pytest.raises(ConfigError, match=r"tls\.client must be true or false"):
        tls.tls_sections(store, nf.refresh())
    key_path, _ = pki.ca_paths(store)
    atomic_write(key_path, "-----BEGIN PRIVATE KEY-----\nSECRETSECRETSECRET\n-----END PRIVATE KEY-----\n", private=True)
    with pytest.raises(ConfigError) as err:
        pki.issue(store, "a", "server")
    assert "SECRET" not in str(err.value) and "not an unencrypted PEM private key" in str(err.value)


def test_rendering_without_tls_is_unchanged_and_insecure_is_loud(store):
    pki.init_ca(store)
    nodes.add_node(store, "a", websocket_port=None)
    plain = nodes.server_config(store, NodeFile.load(store, "a").node)
    assert plain.tls is None and "tls" not in plain.cluster
    nf = NodeFile.load(store, "a")
    nf.set(("tls",), {})
    nf.save()
    assert render(nodes.server_config(store, nf.node)) == render(plain)
    nf.set(("tls",), {"client": False, "route": False})
    assert render(nodes.server_config(store, nf.refresh())) == render(plain)

    r = tls.enable(store, "a", ["client", "route"], insecure=True)
    node = NodeFile.load(store, "a").node
    assert node.tls == {"client": True, "route": True, "insecure": True}
    assert any("NOT verified" in w for w in r["warnings"]) and tls.tls_warnings(node)
    text = render(nodes.server_config(store, node))
    cluster = text.split("cluster {", 1)[1]
    assert "# WARNING" in cluster and "insecure: true" in cluster and "verify: true" in cluster
    assert "insecure" not in text.split("cluster {", 1)[0]  # not on the client port
    nodes.render_node(store, "a")  # nats-server -t accepts it
    with pytest.raises(ConfigError, match="not allowed in production"):
        tls.refuse_insecure_in_production(True, node)
    tls.refuse_insecure_in_production(False, node)


def test_cli_enable_list_issue(store):
    nodes.add_node(store, "a")
    r = run_cli(store, "enable", "--node", "a", "--route")
    assert r.exit_code != 0 and "init-ca" in str(r.exception or r.output)
    assert run_cli(store, "init-ca").exit_code == 0
    r = run_cli(store, "enable", "--node", "a", "--route", "--insecure-tls", "--json")
    assert r.exit_code == 0, r.output
    assert "WARNING" in r.stderr and "--insecure-tls" in r.stderr
    data = json.loads(r.stdout)
    assert data["tls"] == {"route": True, "insecure": True} and [d["kind"] for d in data["issued"]] == ["route"]
    text = NodeFile.load(store, "a").path.read_text()
    assert text.startswith("# DChat node a") and "tls:" in text  # comments kept
    r = run_cli(store, "issue", "server", "--node", "a", "--san", "chat.example.org,192.0.2.7")
    assert r.exit_code == 0, r.output
    r = run_cli(store, "list", "--json")
    certs = json.loads(r.stdout)["certificates"]
    server = next(d for d in certs if d["kind"] == "server")
    assert {"chat.example.org", "192.0.2.7"} <= set(server["sans"])
    pki.issue(store, "a", "client", days=10)
    human = run_cli(store, "list").stdout
    assert "EXPIRES SOON" in human and "a/client" in human
    r = run_cli(store, "renew", "--node", "a", "--json")
    assert r.exit_code == 0, r.output
    out = json.loads(r.stdout)
    assert {d["kind"] for d in out["renewed"]} == {"route", "server", "client"}
    assert out["reloads"] == [{"node": "a", "running": False, "reloaded": False}]


# --- real servers --------------------------------------------------------------------------------------


async def test_three_node_cluster_with_mutual_tls_routes(store, supervised):
    sups = tls_cluster(store, supervised)
    _, varz = http_json(sups["a"].monitor_url + "/varz")
    assert varz["cluster"]["tls_required"] and varz["cluster"]["tls_verify"]
    assert await carried(store, "c", "a")
    assert await carried(store, "a", "b", "room.other")


async def test_node_with_a_certificate_from_another_ca_cannot_join(store, supervised, tmp_path):
    sups = tls_cluster(store, supervised, ("a", "b"))
    nodes.add_node(store, "d", seed_routes=[nodes.route_url(store, "a")])
    tls.enable(store, "d", ["route"])
    # replace d's route certificate with one of a foreign CA (same names, same kind)
    other = Store(tmp_path / "other-home")
    pki.init_ca(other)
    pki.issue(other, "d", "route", node=NodeFile.load(store, "d").node)
    for src, dst in zip(pki.cert_paths(other, "d", "route"), pki.cert_paths(store, "d", "route"), strict=False):
        atomic_write(dst, src.read_bytes(), private=dst.suffix == ".key")
    assert not next(c for c in pki.list_certs(store) if c["node"] == "d")["signed_by_ca"]
    d = supervised("d")  # up waits a short bound for a route, then warns that d runs alone
    assert d.status().links.isolated
    assert wait_for(lambda: routes_of(d) or "d" in routes_of(sups["a"]) | routes_of(sups["b"]), 0.5) is None
    assert routes_of(sups["a"]) == {"b"} and routes_of(sups["b"]) == {"a"}
    log = sups["a"].log_file.read_text()
    assert "TLS route handshake error" in log and "certificate" in log


async def test_plain_text_client_is_refused_on_a_tls_port(store, supervised):
    pki.init_ca(store)
    nodes.add_node(store, "e", cluster=False)
    tls.enable(store, "e", ["client"])
    sup = supervised("e")
    creds = store.creds_path("dchat", "chat", "default")
    # nats-py without the CA: it has to upgrade (the server requires TLS) and cannot trust the server
    reason = await refused(url(store, "e"), creds)
    assert reason and "certificate" in reason
    # raw plain text: the server announces tls_required and never answers a plain PING
    port = NodeFile.load(store, "e").node.client_port
    with socket.create_connection(("127.0.0.1", port), timeout=3) as s:
        info = json.loads(s.makefile("rb").readline().split(b" ", 1)[1])
        assert info["tls_required"] is True
        s.sendall(b'CONNECT {"verbose":false}\r\nPING\r\n')
        got = b""
        try:
            while chunk := s.recv(4096):
                got += chunk
        except (TimeoutError, ConnectionResetError):
            pass
        assert b"PONG" not in got
    # with TLS and the store's CA: connected, and messages flow
    nc = await connect(url(store, "e"), creds, tls=pki.client_ssl_context(store))
    sub = await nc.subscribe("room.tls")
    await nc.publish("room.tls", b"over tls")
    assert (await sub.next_msg(timeout=2)).data == b"over tls"
    _, connz = http_json(sup.monitor_url + "/connz")
    assert connz["connections"] and all(c.get("tls_version") for c in connz["connections"])
    await nc.close()

    # client: verify (reloaded live): the CA alone is not enough, a client certificate of the CA is
    tls.enable(store, "e", ["client"], client_verify=True)
    sup.reload()
    assert await refused(url(store, "e"), creds) is not None
    with pytest.raises(Exception):  # noqa: B017 - nats-py raises several kinds for a refused handshake
        await connect(url(store, "e"), creds, tls=pki.client_ssl_context(store), allow_reconnect=False)
    pki.issue(store, "e", "client")
    nc = await connect(url(store, "e"), creds, tls=pki.client_ssl_context(store, node_id="e", kind="client"))
    await nc.flush()
    await nc.close()


async def test_renewal_on_a_running_cluster_keeps_every_route(store, supervised):
    sups = tls_cluster(store, supervised)
    before = {n: rids(s) for n, s in sups.items()}
    assert all(len(v) == 8 for v in before.values()), before  # 2 peers x (pool 3 + system account route)
    old_disk = disk_serial(store, "a")
    assert peer_serial(store, "a") == old_disk

    r = run_cli(store, "renew", "--json")
    assert r.exit_code == 0, r.output + r.stderr
    out = json.loads(r.stdout)
    assert {(d["node"], d["kind"]) for d in out["renewed"]} == {(n, "route") for n in sups}
    assert all(x["reloaded"] for x in out["reloads"]) and len(out["reloads"]) == 3

    new_disk = disk_serial(store, "a")
    assert new_disk != old_disk
    assert peer_serial(store, "a") == new_disk  # new handshakes use the new certificate
    await asyncio.sleep(0.5)
    assert {n: rids(s) for n, s in sups.items()} == before  # not one route was dropped
    assert await carried(store, "c", "a")


async def test_expired_route_certificate_is_reported_and_refused(store, supervised):
    sups = tls_cluster(store, supervised, ("a",))
    nodes.add_node(store, "f", seed_routes=[nodes.route_url(store, "a")])
    tls.enable(store, "f", ["route"])
    now = dt.datetime.now(dt.timezone.utc)
    pki.issue(store, "f", "route", days=1, not_before=now - dt.timedelta(days=30))
    entry = next(c for c in pki.list_certs(store) if c["node"] == "f")
    assert entry["expired"] and entry["days_left"] < 0 and entry["signed_by_ca"]
    assert any("expired" in w for w in tls.tls_warnings(NodeFile.load(store, "f").node, store))
    assert "EXPIRED" in run_cli(store, "list").stdout
    f = supervised("f")  # up waits a short bound for a route, then warns that f runs alone
    assert f.status().links.isolated
    assert wait_for(lambda: routes_of(f) or routes_of(sups["a"]), 0.5) is None
    assert "expired" in sups["a"].log_file.read_text()
    # renewing and reloading the expired node lets it join (explicit routes are retried)
    pki.renew(store, "f")
    assert reload_running(store, ["f"])[0]["reloaded"]
    assert wait_for(lambda: routes_of(f) == {"a"} and routes_of(sups["a"]) == {"f"}, 10)


async def test_gateway_leafnode_and_websocket_links_with_tls(store, supervised):
    from dchat_ops.natsbin import free_port

    pki.init_ca(store)
    nodes.add_node(
        store, "e1", cluster_name="east", gateway_port=free_port(), leaf_port=free_port(), websocket_port=free_port()
    )
    hub = NodeFile.load(store, "e1").node
    nodes.add_node(store, "w1", cluster_name="west", gateways=[("east", f"nats://127.0.0.1:{hub.gateway['port']}")])
    nodes.add_node(store, "leaf", cluster=False, leaf_of=[f"nats-leaf://127.0.0.1:{hub.leafnodes['port']}"])
    assert tls.enable(store, "e1", tls.applicable_links(hub))["tls"] == {
        "client": True,
        "route": True,
        "gateway": True,
        "leafnode": True,
        "websocket": True,
    }
    tls.enable(store, "w1", ["route", "gateway"])
    tls.enable(store, "leaf", ["leafnode"])
    e, w = supervised("e1"), supervised("w1")
    supervised("leaf")
    assert wait_for(
        lambda: (
            w.status().data["gateways"] == ["east"]
            and e.status().data["gateways"] == ["west"]
            and e.status().data["leafnodes"]
        ),
        10,
    )
    _, varz = http_json(e.monitor_url + "/varz")
    assert varz["gateway"]["tls_required"] and varz["leaf"]["tls_required"] and varz["leaf"]["tls_verify"]

    def presented(port, info_first, via, kind):
        """Serial of the certificate e1 presents on ``port`` to a fresh handshake."""
        ctx = pki.client_ssl_context(store, node_id=via, kind=kind)
        with socket.create_connection(("127.0.0.1", port), timeout=3) as raw:
            if info_first:  # client and leafnode ports send INFO in plain text first
                buf = b""
                while not buf.endswith(b"\r\n"):
                    buf += raw.recv(1)
            with ctx.wrap_socket(raw, server_hostname="127.0.0.1") as s:
                return x509.load_der_x509_certificate(s.getpeercert(binary_form=True)).serial_number

    def all_current():
        return {
            "gateway": presented(hub.gateway["port"], False, "w1", "route") == disk_serial(store, "e1", "route"),
            "leafnode": presented(hub.leafnodes["port"], True, "leaf", "client") == disk_serial(store, "e1", "server"),
            "websocket": presented(hub.websocket["port"], False, "w1", "route") == disk_serial(store, "e1", "server"),
        }

    assert all(all_current().values())
    old = disk_serial(store, "e1", "server")
    pki.renew(store, "e1")
    assert all(r["reloaded"] for r in reload_running(store, ["e1"]))
    assert disk_serial(store, "e1", "server") != old
    assert all_current() == {"gateway": True, "leafnode": True, "websocket": True}
    assert e.status().data["gateways"] == ["west"] and e.status().data["leafnodes"]


async def test_push_and_pull_reach_a_node_with_client_tls(store, supervised):
    from dchat_ops.nsc import admin
    from dchat_ops.runtime import push

    pki.init_ca(store)
    nodes.add_node(store, "p", cluster=False)
    tls.enable(store, "p", ["client"])
    sup = supervised("p")
    admin.edit_account(store, "chat", limits={"conn": 50})
    report = await asyncio.to_thread(push.push, store, ["chat"])
    assert report.ok and [r["server"] for r in report.results] == ["p"], report.results
    rows = await asyncio.to_thread(push.pull, store)
    assert any(r["name"] == "chat" and r.get("same") for r in rows)
    assert sup.status().data["warnings"] == []
