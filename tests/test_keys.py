import nkeys
import pytest

from dchat_ops.errors import NKeyError
from dchat_ops.nsc.keys import KINDS, KeyPair, PublicKey, check_public_key, kind_of_public, kind_of_seed

LETTERS = {"operator": "O", "account": "A", "user": "U", "server": "N", "cluster": "C", "curve": "X"}


@pytest.mark.parametrize("kind", KINDS)
def test_generate_and_reload_every_kind(kind):
    kp = KeyPair.generate(kind)
    assert kp.public_key[0] == LETTERS[kind] and len(kp.public_key) == 56
    assert kp.seed.startswith("S" + LETTERS[kind]) and len(kp.seed) == 58
    again = KeyPair.from_seed(kp.seed)
    assert again.public_key == kp.public_key and again.kind == kind
    assert kind_of_public(kp.public_key) == kind and kind_of_seed(kp.seed) == kind


@pytest.mark.parametrize("kind", ["operator", "account", "user", "server", "cluster"])
def test_interop_with_the_nkeys_package(kind):
    ours = KeyPair.generate(kind)
    theirs = nkeys.from_seed(ours.seed.encode())
    assert theirs.public_key.decode() == ours.public_key
    assert theirs.private_key.decode() == ours.private_key
    sig = ours.sign(b"nonce")
    assert theirs.verify(b"nonce", sig)
    assert ours.verify(b"nonce", theirs.sign(b"nonce"))
    assert not ours.verify(b"other", sig)


def test_repr_never_shows_the_seed():
    kp = KeyPair.generate("user")
    assert kp.seed not in repr(kp) and kp.seed not in str(kp)


def test_wrong_kind_seed_is_refused_with_a_clear_message():
    seed = KeyPair.generate("account").seed
    with pytest.raises(NKeyError) as e:
        KeyPair.from_seed(seed, "user")
    assert "expected a user seed" in str(e.value) and "account" in str(e.value)
    assert seed not in str(e.value)


def test_wrong_kind_public_key_is_refused():
    pub = KeyPair.generate("user").public_key
    with pytest.raises(NKeyError, match="expected a public account key"):
        check_public_key(pub, "account", "issuer")


@pytest.mark.parametrize("bad", ["", "SU", "S" * 58, "not a seed at all", "SUAAAA" + "=" * 52])
def test_malformed_seeds(bad):
    with pytest.raises(NKeyError):
        KeyPair.from_seed(bad)


def test_flipped_character_breaks_the_checksum():
    kp = KeyPair.generate("user")
    s = kp.seed
    flipped = s[:20] + ("A" if s[20] != "A" else "B") + s[21:]
    with pytest.raises(NKeyError, match="checksum"):
        KeyPair.from_seed(flipped)
    p = kp.public_key
    with pytest.raises(NKeyError):
        PublicKey(p[:30] + ("A" if p[30] != "A" else "B") + p[31:])


def test_curve_keys_agree_on_a_shared_secret_and_cannot_sign():
    a, b = KeyPair.generate("curve"), KeyPair.generate("curve")
    from dchat_ops.nsc.keys import x25519_public

    s1 = a.x25519_private().exchange(x25519_public(b.public_key))
    s2 = b.x25519_private().exchange(x25519_public(a.public_key))
    assert s1 == s2
    with pytest.raises(NKeyError):
        a.sign(b"x")


def test_base32_is_the_standard_librarys_for_every_length():
    import base64
    import os

    from dchat_ops.nsc.keys import _b32decode, _b32encode, _b32encode_many

    for n in range(0, 72):
        raws = [os.urandom(n) for _ in range(70)] + [b"\0" * n, b"\xff" * n]
        want = [base64.b32encode(r).decode().rstrip("=") for r in raws]
        assert [_b32encode(r) for r in raws] == want, n
        assert _b32encode_many(raws) == want, n
        for text, raw in zip(want[:3], raws, strict=False):
            if text:
                assert _b32decode(text, "x") == raw, n
    assert _b32encode_many([]) == [] and _b32encode_many([b"ab", b"abc"]) == ["MFRA", "MFRGG"]


@pytest.mark.parametrize("bad", ["", "A", "ABC", "ABCDEF", "abcd", "AB1D", "AB=D"])
def test_base32_decoding_refuses_what_is_not_base32(bad):
    from dchat_ops.nsc.keys import _b32decode

    with pytest.raises(NKeyError, match="not valid base32"):
        _b32decode(bad, "value")


def test_bulk_keys_are_key_pairs_of_their_kind():
    from dchat_ops.nsc.keys import fresh_keys

    publics, seeds = fresh_keys("user", 70)
    assert len(set(publics)) == 70
    for public, seed in zip(publics, seeds, strict=True):
        theirs = nkeys.from_seed(seed.encode())
        assert theirs.public_key.decode() == public == KeyPair.from_seed(seed, "user").public_key
    with pytest.raises(NKeyError, match="curve"):
        fresh_keys("curve", 1)


def test_signatures_of_a_wrong_length_do_not_verify():
    kp = KeyPair.generate("account")
    sig = kp.sign(b"m")
    assert kp.verify(b"m", sig) and PublicKey(kp.public_key).verify(b"m", sig)
    for bad in (b"", sig[:63], sig + b"\0", bytes(64)):
        assert not kp.verify(b"m", bad) and not PublicKey(kp.public_key).verify(b"m", bad)
