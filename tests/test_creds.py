import pytest

from dchat_ops.errors import CredsError
from dchat_ops.nsc.claims import UserClaims
from dchat_ops.nsc.creds import format_creds, parse_creds
from dchat_ops.nsc.jwt import encode
from dchat_ops.nsc.keys import KeyPair


@pytest.fixture
def user():
    acc = KeyPair.generate("account")
    kp = KeyPair.generate("user")
    return encode(UserClaims(subject=kp.public_key, name="u"), acc), kp


def test_exact_standard_layout(user):
    token, kp = user
    text = format_creds(token, kp.seed)
    assert text == (
        "-----BEGIN NATS USER JWT-----\n"
        f"{token}\n"
        "------END NATS USER JWT------\n"
        "\n"
        "************************* IMPORTANT *************************\n"
        "NKEY Seed printed below can be used to sign and prove identity.\n"
        "NKEYs are sensitive and should be treated as secrets.\n"
        "\n"
        "-----BEGIN USER NKEY SEED-----\n"
        f"{kp.seed}\n"
        "------END USER NKEY SEED------\n"
        "\n"
        "*************************************************************\n"
    )
    assert "\r" not in text


def test_parse_standard_minimal_and_crlf(user):
    token, kp = user
    std = format_creds(token, kp.seed)
    minimal = (
        f"-----BEGIN NATS USER JWT-----\n{token}\n------END NATS USER JWT------\n"
        f"-----BEGIN USER NKEY SEED-----\n{kp.seed}\n------END USER NKEY SEED------\n"
    )
    undecorated_seed = f"-----BEGIN NATS USER JWT-----\n{token}\n------END NATS USER JWT------\n\n{kp.seed}\n"
    for text in (std, minimal, std.replace("\n", "\r\n"), undecorated_seed, minimal.rstrip("\n")):
        c = parse_creds(text)
        assert c.jwt == token and c.seed == kp.seed
        assert c.keypair().public_key == kp.public_key


@pytest.mark.parametrize(
    "text, message",
    [
        ("", "no JWT block"),
        ("just some text\n", "no JWT block"),
        ("-----BEGIN USER NKEY SEED-----\nSUAAAA\n------END USER NKEY SEED------\n", "no JWT block"),
    ],
)
def test_missing_blocks(text, message):
    with pytest.raises(CredsError, match=message):
        parse_creds(text)


def test_missing_seed_and_bad_seed(user):
    token, kp = user
    jwt_only = f"-----BEGIN NATS USER JWT-----\n{token}\n------END NATS USER JWT------\n"
    with pytest.raises(CredsError, match="no nkey seed"):
        parse_creds(jwt_only)
    bad = format_creds(token, kp.seed).replace(kp.seed, kp.seed[:-3] + "AAA")
    with pytest.raises(CredsError) as e:
        parse_creds(bad)
    assert kp.seed[:-3] not in str(e.value)


def test_repr_hides_the_seed(user):
    token, kp = user
    c = parse_creds(format_creds(token, kp.seed))
    assert kp.seed not in repr(c)


def test_nats_py_reads_our_creds(user, tmp_path):
    from nats.aio.client import Client

    token, kp = user
    path = tmp_path / "u.creds"
    path.write_text(format_creds(token, kp.seed))
    client = Client()
    assert client._read_creds_user_jwt(str(path)).decode() == token
    assert client._read_creds_user_nkey(str(path)).decode() == kp.seed
