"""nkey tools on the command line: keys of every kind, a seed's public key, sign and verify; seeds go
only where asked (a 0600 file, or standard output with --print-seed) and never into an error."""

from __future__ import annotations

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
    code, out, _ = run("nkey", "verify", kp.public_key, str(data), sig)
    assert code == 0 and "signature ok" in out
    data.write_bytes(b"hello \x00 World")
    code, out, err = run("nkey", "verify", kp.public_key, str(data), sig)
    assert code == 1 and "does NOT hold" in out and "does not hold" in err
    code, _, err = run("nkey", "verify", "not-a-key", str(data), sig)
    assert code == 2 and "Traceback" not in err
    code, _, err = run("nkey", "verify", kp.public_key, str(data), "!!!")
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
