"""nkey tools: make a key of any kind (curve included), show a seed's public key, sign and verify."""

from __future__ import annotations

import click

from dchat_ops._cli.app import cli
from dchat_ops._cli.output import emit, json_option

KIND_CHOICE = click.Choice(["operator", "account", "user", "server", "cluster", "curve"])


@cli.group("nkey")
def nkey():
    """nkey tools: generate any kind of key (curve included), show a public key, sign, verify."""


@nkey.command("gen")
@click.argument("kind", type=KIND_CHOICE)
@click.option("-o", "--output", type=click.Path(dir_okay=False), help="Write the seed here (0600, in a 0700 folder).")
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
    """Check SIGNATURE (base64url or base64) of DATA_FILE's bytes by PUBLIC_KEY; exit 1 when it does not hold."""
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
