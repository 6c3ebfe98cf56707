"""nkey tools: make a key of any kind (curve included), show a seed's public key, sign and verify, seal and open."""

from __future__ import annotations

import click

from dchat_ops._cli.app import cli
from dchat_ops._cli.output import emit, json_option

KIND_CHOICE = click.Choice(["operator", "account", "user", "server", "cluster", "curve"])


@cli.group("nkey")
def nkey():
    """nkey tools: generate any kind of key (curve included), show a public key, sign, verify, seal, open."""


@nkey.command("gen")
@click.argument("kind", type=KIND_CHOICE)
@click.option(
    "-o", "--output", type=click.Path(dir_okay=False), help="Write the seed here (0600; a folder made for it is 0700)."
)
@click.option("--force", is_flag=True, help="Replace an existing file.")
@click.option("--print-seed", is_flag=True, help="Print the seed on standard output instead (you asked for it).")
@json_option
def nkey_gen(kind, output, force, print_seed, as_json):
    """Make a key pair of KIND; the seed goes to a file (-o) or, with --print-seed, to standard output."""
    from pathlib import Path

    from dchat_ops._fs import atomic_write
    from dchat_ops.nsc.keys import KeyPair

    if bool(output) == print_seed:
        raise click.UsageError("give -o FILE (the seed is written there, 0600) or --print-seed")
    kp = KeyPair.generate(kind)
    if output:
        atomic_write(Path(output), kp.seed + "\n", private=True, force=force)
        emit(as_json, {"kind": kind, "public_key": kp.public_key, "seed_file": output}, kp.public_key)
    else:
        emit(as_json, {"kind": kind, "public_key": kp.public_key, "seed": kp.seed}, [kp.seed, kp.public_key])


@nkey.command("pub")
@click.argument("key_file", type=click.Path(dir_okay=False, allow_dash=True))
@json_option
def nkey_pub(key_file, as_json):
    """The public key of the seed in KEY_FILE (an .nk file or a creds file; - reads standard input)."""
    from dchat_ops.nsc.keys import read_key_file

    kp = read_key_file(key_file)
    emit(as_json, {"kind": kp.kind, "public_key": kp.public_key}, kp.public_key)


@nkey.command("sign")
@click.argument("key_file", type=click.Path(dir_okay=False, allow_dash=True))
@click.argument("data_file", type=click.Path(dir_okay=False, exists=True))
@json_option
def nkey_sign(key_file, data_file, as_json):
    """Sign the bytes of DATA_FILE with the seed in KEY_FILE: the Ed25519 signature, base64url."""
    import base64
    from pathlib import Path

    from dchat_ops.nsc.keys import read_key_file

    kp = read_key_file(key_file)
    sig = base64.urlsafe_b64encode(kp.sign(Path(data_file).read_bytes())).rstrip(b"=").decode()
    emit(as_json, {"public_key": kp.public_key, "signature": sig}, sig)


@nkey.command("verify")
@click.argument("public_key")
@click.argument("data_file", type=click.Path(dir_okay=False, exists=True))
@click.argument("signature")
@json_option
def nkey_verify(public_key, data_file, signature, as_json):
    """Check SIGNATURE (base64url or base64) of DATA_FILE's bytes by PUBLIC_KEY; exit 1 when it does not hold.

    A base64url signature may start with '-': put '--' before the arguments (nkey verify -- KEY FILE SIG).
    """
    import base64
    import binascii
    from pathlib import Path

    from dchat_ops.errors import DchatOpsError
    from dchat_ops.nsc.keys import PublicKey

    try:
        key = PublicKey(public_key)
    except DchatOpsError as exc:
        raise click.BadParameter(str(exc), param_hint="PUBLIC_KEY") from None
    text = signature.strip().replace("-", "+").replace("_", "/")
    try:
        raw = base64.b64decode(text + "=" * (-len(text) % 4), validate=True)
    except (binascii.Error, ValueError):
        raise click.BadParameter("not base64", param_hint="SIGNATURE") from None
    ok = len(raw) == 64 and key.verify(Path(data_file).read_bytes(), raw)
    emit(as_json, {"public_key": public_key, "valid": ok}, "signature ok" if ok else "signature does NOT hold")
    if not ok:
        raise DchatOpsError(f"the signature of {data_file} does not hold for {public_key}")


def _curve_args(public_key: str, key_file: str, hint: str):
    """The curve public key and the curve key pair of KEY_FILE, each a bad value (exit 2) when it is not one."""
    from dchat_ops.errors import DchatOpsError
    from dchat_ops.nsc.keys import check_public_key, read_key_file

    try:
        check_public_key(public_key, "curve")
    except DchatOpsError as exc:
        raise click.BadParameter(str(exc), param_hint=hint) from None
    try:
        kp = read_key_file(key_file)
    except DchatOpsError as exc:
        raise click.BadParameter(str(exc), param_hint="--key") from None
    if kp.kind != "curve":
        raise click.BadParameter(f"{key_file} holds a {kp.kind} seed, not a curve (SX...) seed", param_hint="--key")
    return kp


def _read_input(path: str) -> bytes:
    import sys

    if path == "-":
        return sys.stdin.buffer.read()
    try:
        with open(path, "rb") as fh:
            return fh.read()
    except OSError as exc:
        raise click.BadParameter(f"cannot read {path}: {exc.strerror or exc}", param_hint="--in") from None


def _write_output(data: bytes, out: str | None, force: bool, *, private: bool) -> None:
    import sys
    from pathlib import Path

    from dchat_ops._fs import atomic_write

    if out is None or out == "-":
        sys.stdout.buffer.write(data)
        sys.stdout.flush()
    else:
        atomic_write(Path(out), data, private=private, force=force)


_IO = [
    click.option("--in", "in_file", default="-", show_default=True, help="Read from this file (- : standard input)."),
    click.option("--out", "out_file", help="Write to this file (default: standard output)."),
    click.option("--force", is_flag=True, help="Replace an existing --out file."),
]


def _io(f):
    for option in reversed(_IO):
        f = option(f)
    return f


@nkey.command("seal")
@click.option("--to", "recipient", required=True, help="The recipient's curve public key (X...).")
@click.option("--key", "key_file", required=True, help="Your curve seed file (SX...: 'dchat-ops nkey gen curve').")
@_io
@json_option
def nkey_seal(recipient, key_file, in_file, out_file, force, as_json):
    """Seal data to a curve public key, as nkeys' Seal does: xkv1, a random nonce, then the NaCl box.

    Only the holder of the recipient's curve seed opens it, knowing it came from your key
    ('dchat-ops nkey open --from YOUR_X_KEY').
    """
    import base64

    from dchat_ops.nsc.keys import seal

    kp = _curve_args(recipient, key_file, "--to")
    sealed = seal(_read_input(in_file), recipient, kp)
    if as_json:
        d = {"from": kp.public_key, "to": recipient, "bytes": len(sealed), "out": out_file}
        if not out_file:
            d["sealed"] = base64.b64encode(sealed).decode()
        else:
            _write_output(sealed, out_file, force, private=False)
        emit(True, d)
        return
    _write_output(sealed, out_file, force, private=False)


@nkey.command("open")
@click.option("--from", "sender", required=True, help="The sender's curve public key (X...).")
@click.option("--key", "key_file", required=True, help="Your curve seed file (SX...), the key it was sealed to.")
@_io
@json_option
def nkey_open(sender, key_file, in_file, out_file, force, as_json):
    """Open data sealed to your curve key by SENDER (nkeys' Open): exit 1 when it was not sealed by that
    key to yours, or was changed since; nothing is written then."""
    import base64

    from dchat_ops.errors import DchatOpsError
    from dchat_ops.nsc.keys import XKEY_VERSION, open_sealed

    kp = _curve_args(sender, key_file, "--from")
    data = _read_input(in_file)
    if not data.startswith(XKEY_VERSION):
        raise click.BadParameter("not a sealed message (it does not start with xkv1)", param_hint="--in")
    try:
        opened = open_sealed(data, sender, kp)
    except DchatOpsError as exc:
        raise DchatOpsError(str(exc)) from None
    if as_json:
        d = {"from": sender, "to": kp.public_key, "bytes": len(opened), "out": out_file}
        if not out_file:
            d["data"] = base64.b64encode(opened).decode()
        else:
            _write_output(opened, out_file, force, private=True)
        emit(True, d)
        return
    _write_output(opened, out_file, force, private=True)
