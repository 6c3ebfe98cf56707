"""nkey tools on the command line: keys of every kind, a seed's public key, sign and verify; seeds go
only where asked (a 0600 file, or standard output with --print-seed) and never into an error."""

from __future__ import annotations

import base64
import contextlib
import io
import json
import stat

import pytest

from dchat_ops._cli.main import cli
from dchat_ops._cli.output import run_cli
from dchat_ops.nsc.keys import KeyPair, kind_of_public


def run(*args: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = run_cli(cli, list(args))
    return code, out.getvalue(), err.getvalue()


@pytest.mark.parametrize("kind", ["operator", "account", "user", "server", "cluster", "curve"])
def test_gen_writes_a_private_seed_file_whose_public_key_pub_shows(tmp_path, kind):
    seed_file = tmp_path / "keys" / f"{kind}.nk"
    code, out, err = run("nkey", "gen", kind, "-o", str(seed_file), "--json")
    assert code == 0, err
    made = json.loads(out)
    assert kind_of_public(made["public_key"]) == kind and "seed" not in made
    assert stat.S_IMODE(seed_file.stat().st_mode) == 0o600
    assert stat.S_IMODE(seed_file.parent.stat().st_mode) == 0o700
    assert KeyPair.from_seed(seed_file.read_text().strip()).public_key == made["public_key"]
    code, out, _ = run("nkey", "pub", str(seed_file))
    assert code == 0 and out.strip() == made["public_key"]
    code, _, err = run("nkey", "gen", kind, "-o", str(seed_file))  # never overwritten without --force
    assert code == 1 and "Traceback" not in err


def test_gen_needs_a_place_for_the_seed_and_prints_it_only_when_asked(tmp_path):
    code, out, err = run("nkey", "gen", "user")
    assert code == 2 and "--print-seed" in err and not out
    code, out, _ = run("nkey", "gen", "curve", "--print-seed")
    seed, public = out.split()
    assert code == 0 and seed.startswith("SX") and KeyPair.from_seed(seed).public_key == public
    code, _, err = run("nkey", "gen", "nonsense", "--print-seed")
    assert code == 2 and "Traceback" not in err


def test_sign_and_verify_round_trip_and_a_changed_file_fails(tmp_path):
    kp = KeyPair.generate("account")
    key_file = tmp_path / "a.nk"
    key_file.write_text(kp.seed + "\n")
    data = tmp_path / "data.bin"
    data.write_bytes(b"hello \x00 world")
    code, out, _ = run("nkey", "sign", str(key_file), str(data))
    sig = out.strip()
    assert code == 0 and kp.verify(data.read_bytes(), __import__("base64").urlsafe_b64decode(sig + "=="))
    code, out, _ = run("nkey", "verify", "--", kp.public_key, str(data), sig)
    assert code == 0 and "signature ok" in out
    data.write_bytes(b"hello \x00 World")
    code, out, err = run("nkey", "verify", "--", kp.public_key, str(data), sig)
    assert code == 1 and "does NOT hold" in out and "does not hold" in err
    code, _, err = run("nkey", "verify", "--", "not-a-key", str(data), sig)
    assert code == 2 and "Traceback" not in err
    code, _, err = run("nkey", "verify", "--", kp.public_key, str(data), "!!!")
    assert code == 2 and "not base64" in err


def test_pub_reads_a_creds_file_and_refuses_files_without_one_seed_never_echoing_it(tmp_path, store):
    op = store.current_operator()
    creds = store.creds_path(op, "chat", "default")
    code, out, _ = run("nkey", "pub", str(creds))
    assert code == 0 and out.strip() == store.user("chat", "default").public_key
    seed = KeyPair.generate("user").seed
    two = tmp_path / "two.txt"
    two.write_text(f"{seed}\n{KeyPair.generate('user').seed}\n")
    none = tmp_path / "none.txt"
    none.write_text("nothing here\n")
    for path, words in ((two, "more than one seed"), (none, "no seed"), (tmp_path / "missing", "cannot read")):
        code, out, err = run("nkey", "pub", str(path))
        assert code == 1 and words in err and seed not in err + out and "Traceback" not in err
    code, _, err = run("nkey", "sign", str(tmp_path / "x.nk"), str(none))
    assert code in (1, 2) and "Traceback" not in err
    curve = tmp_path / "c.nk"
    curve.write_text(KeyPair.generate("curve").seed)
    code, _, err = run("nkey", "sign", str(curve), str(none))
    assert code == 1 and "cannot sign" in err


# --- seal and open: nkeys' curve sealing (xkv1 + 24-byte nonce + NaCl box) ----------------------------

# NaCl's published crypto_box test vector (Alice's secret key, Bob's secret key, the nonce, the message
# and the box of it), as facts: a sealed message is "xkv1", the nonce, then exactly this box.
NACL_ALICE_SK = "77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a"
NACL_BOB_SK = "5dab087e624a8a4b79e17f8b83800ee66f3bb1292618b6fd1c2f8b27ff88e0eb"
NACL_BOB_PK = "de9edb7d7b7dc1b4d35b61c2ece435373f8343c85b78674dadfc7e146f882b4f"
NACL_NONCE = "69696ee955b62b73cd62bda875fc73d68219e0036b7a0b37"
NACL_MESSAGE = (
    "be075fc53c81f2d5cf141316ebeb0c7b5228c52a4c62cbd44b66849b64244ffce5ecbaaf33bd751a1ac728d45e6c61296cdc3c0123"
    "3561f41db66cce314adb310e3be8250c46f06dceea3a7fa1348057e2f6556ad6b1318a024a838f21af1fde048977eb48f59ffd4924"
    "ca1c60902e52f0a089bc76897040e082f937763848645e0705"
)
NACL_BOX = (
    "f3ffc7703f9400e52a7dfb4b3d3305d98e993b9f48681273c29650ba32fc76ce48332ea7164d96a4476fb8c531a1186ac0dfc17c98"
    "dce87b4da7f011ec48c97271d2c20f9b928fe2270d6fb863d51738b48eeee314a7cc8ab932164548e526ae90224368517acfeabd6b"
    "b3732bc0e9da99832b61ca01b6de56244a9e88d5f9b37973f622a43d14a6599b1f654cb45a74e355a5"
)


def _nacl_pair():
    alice = KeyPair("curve", bytes.fromhex(NACL_ALICE_SK))
    bob = KeyPair("curve", bytes.fromhex(NACL_BOB_SK))
    return alice, bob


def test_seal_is_xkv1_nonce_and_the_nacl_box_of_the_known_vector():
    from dchat_ops.nsc.keys import open_sealed, seal

    alice, bob = _nacl_pair()
    assert bob.raw_public().hex() == NACL_BOB_PK
    nonce, message = bytes.fromhex(NACL_NONCE), bytes.fromhex(NACL_MESSAGE)
    sealed = seal(message, bob.public_key, alice, nonce=nonce)
    assert sealed == b"xkv1" + nonce + bytes.fromhex(NACL_BOX)
    assert open_sealed(sealed, alice.public_key, bob) == message


def test_open_reads_the_known_vector_from_a_file(tmp_path):
    alice, bob = _nacl_pair()
    (tmp_path / "bob.nk").write_text(bob.seed + "\n")
    sealed = tmp_path / "msg.xkv"
    sealed.write_bytes(b"xkv1" + bytes.fromhex(NACL_NONCE) + bytes.fromhex(NACL_BOX))
    out = tmp_path / "msg.out"
    code, _, err = run(
        "nkey",
        "open",
        "--from",
        alice.public_key,
        "--key",
        str(tmp_path / "bob.nk"),
        "--in",
        str(sealed),
        "--out",
        str(out),
    )
    assert code == 0, err
    assert out.read_bytes() == bytes.fromhex(NACL_MESSAGE)
    assert stat.S_IMODE(out.stat().st_mode) == 0o600  # what was sealed may be secret


def _curve_key(tmp_path, name):
    path = tmp_path / f"{name}.nk"
    code, out, err = run("nkey", "gen", "curve", "-o", str(path))
    assert code == 0, err
    return out.strip(), path


def test_seal_open_round_trip_with_files_and_pipes(tmp_path):
    import subprocess
    import sys

    a_pub, a_key = _curve_key(tmp_path, "a")
    b_pub, b_key = _curve_key(tmp_path, "b")
    data = bytes(range(256)) * 10
    (tmp_path / "m").write_bytes(data)
    code, _, err = run(
        "nkey", "seal", "--to", b_pub, "--key", str(a_key), "--in", str(tmp_path / "m"), "--out", str(tmp_path / "s")
    )
    assert code == 0, err
    sealed = (tmp_path / "s").read_bytes()
    assert sealed[:4] == b"xkv1" and len(sealed) == 4 + 24 + 16 + len(data) and data not in sealed
    code, _, err = run(
        "nkey", "open", "--from", a_pub, "--key", str(b_key), "--in", str(tmp_path / "s"), "--out", str(tmp_path / "o")
    )
    assert code == 0, err
    assert (tmp_path / "o").read_bytes() == data
    # two seals of one message differ (a fresh nonce each)
    run("nkey", "seal", "--to", b_pub, "--key", str(a_key), "--in", str(tmp_path / "m"), "--out", str(tmp_path / "s2"))
    assert (tmp_path / "s2").read_bytes() != sealed
    # standard input to standard output, through the installed command line
    exe = [sys.executable, "-m", "dchat_ops"]
    s = subprocess.run(
        [*exe, "nkey", "seal", "--to", b_pub, "--key", str(a_key)], input=b"hi there", capture_output=True, check=True
    ).stdout
    o = subprocess.run(
        [*exe, "nkey", "open", "--from", a_pub, "--key", str(b_key)], input=s, capture_output=True, check=True
    ).stdout
    assert o == b"hi there"
    # --json: base64 of what was sealed or opened
    code, out, _ = run("nkey", "seal", "--to", b_pub, "--key", str(a_key), "--in", str(tmp_path / "m"), "--json")
    d = json.loads(out)
    assert code == 0 and d["from"] == a_pub and d["to"] == b_pub and d["bytes"] == len(sealed)
    (tmp_path / "s3").write_bytes(base64.b64decode(d["sealed"]))
    code, out, _ = run("nkey", "open", "--from", a_pub, "--key", str(b_key), "--in", str(tmp_path / "s3"), "--json")
    assert code == 0 and base64.b64decode(json.loads(out)["data"]) == data


def test_open_refuses_another_sender_a_changed_message_and_bad_values(tmp_path):
    a_pub, a_key = _curve_key(tmp_path, "a")
    b_pub, b_key = _curve_key(tmp_path, "b")
    c_pub, c_key = _curve_key(tmp_path, "c")
    (tmp_path / "m").write_bytes(b"secret plans")
    run("nkey", "seal", "--to", b_pub, "--key", str(a_key), "--in", str(tmp_path / "m"), "--out", str(tmp_path / "s"))
    sealed = (tmp_path / "s").read_bytes()
    out = tmp_path / "o"

    def opened(sender, key, data):
        (tmp_path / "in").write_bytes(data)
        return run("nkey", "open", "--from", sender, "--key", str(key), "--in", str(tmp_path / "in"), "--out", str(out))

    for sender, key, data in (
        (c_pub, b_key, sealed),  # not from c
        (a_pub, c_key, sealed),  # not to c
        (a_pub, b_key, sealed[:-1] + bytes([sealed[-1] ^ 1])),  # changed
    ):
        code, _, err = opened(sender, key, data)
        assert code == 1 and err.startswith("error: cannot open") and len(err.strip().splitlines()) == 1
        assert not out.exists()
    # bad values: exit 2, nothing written, no seed in the error
    code, _, err = opened(a_pub, b_key, b"plain text, never sealed" * 3)
    assert code == 2 and "xkv1" in err and not out.exists()
    user = KeyPair.generate("user")
    (tmp_path / "user.nk").write_text(user.seed)
    for args in (
        ["seal", "--to", user.public_key, "--key", str(a_key)],  # not a curve key
        ["seal", "--to", "XNOTAKEY", "--key", str(a_key)],
        ["seal", "--to", b_pub, "--key", str(tmp_path / "user.nk")],  # not a curve seed
        ["open", "--from", a_pub, "--key", str(tmp_path / "missing.nk")],
    ):
        code, _, err = run("nkey", *args, "--in", str(tmp_path / "m"), "--out", str(out))
        assert code == 2, (args, err)
        assert not out.exists() and user.seed not in err and "Traceback" not in err
    # an existing --out is replaced only with --force
    out.write_bytes(b"keep")
    code, _, _ = opened(a_pub, b_key, sealed)
    assert code != 0 and out.read_bytes() == b"keep"
    code, _, _ = run(
        "nkey", "open", "--from", a_pub, "--key", str(b_key), "--in", str(tmp_path / "s"), "--out", str(out), "--force"
    )
    assert code == 0 and out.read_bytes() == b"secret plans"
