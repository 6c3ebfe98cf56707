"""Chain verification: each broken link is named, table-driven."""

import pytest

from dchat_ops.errors import ChainError
from dchat_ops.nsc.claims import AccountClaims, OperatorClaims, ScopedSigningKey, UserClaims
from dchat_ops.nsc.jwt import encode, verify_chain
from dchat_ops.nsc.keys import KeyPair

NOW = 1_800_000_000


def clock():
    return NOW


class Net:
    """An operator with a signing key, an account with a plain and a scoped signing key."""

    def __init__(self, strict=False):
        self.op = KeyPair.generate("operator")
        self.op_sk = KeyPair.generate("operator")
        self.acc = KeyPair.generate("account")
        self.acc_sk = KeyPair.generate("account")
        self.scoped = KeyPair.generate("account")
        oc = OperatorClaims(
            subject=self.op.public_key, name="op", signing_keys=[self.op_sk.public_key], strict_signing_key_usage=strict
        )
        self.op_jwt = encode(oc, self.op, clock=clock)
        self.ac = AccountClaims(subject=self.acc.public_key, name="acc")
        self.ac.signing_keys = [self.acc_sk.public_key, ScopedSigningKey(self.scoped.public_key, "guest")]
        self.acc_jwt = encode(self.ac, self.op_sk if strict else self.op, clock=clock)

    def user(self, signer=None, issuer_account=None, scoped_clean=False, **kw):
        u = UserClaims(subject=KeyPair.generate("user").public_key, name="u", **kw)
        if scoped_clean:
            u.limits.clear_for_scope()
        signer = signer or self.acc
        if issuer_account is None and signer is not self.acc:
            issuer_account = self.acc.public_key
        u.issuer_account = issuer_account or ""
        return encode(u, signer, clock=clock)


def test_good_chains():
    n = Net()
    r = verify_chain(n.op_jwt, n.acc_jwt, n.user(), clock=clock)
    assert r.user.name == "u" and r.account.name == "acc"
    verify_chain(n.op_jwt, n.acc_jwt, n.user(n.acc_sk), clock=clock)
    r = verify_chain(n.op_jwt, n.acc_jwt, n.user(n.scoped, scoped_clean=True), clock=clock)
    assert r.user_scope_role == "guest"
    s = Net(strict=True)
    verify_chain(s.op_jwt, s.acc_jwt, s.user(s.acc_sk), clock=clock)


def _cases():
    n = Net()
    s = Net(strict=True)
    stranger_op = Net()
    unknown = KeyPair.generate("account")
    return [
        ("user signed by an unknown key", (n.op_jwt, n.acc_jwt, n.user(unknown)), "user", "untrusted-issuer"),
        (
            "signing-key user without issuer_account",
            (n.op_jwt, n.acc_jwt, n.user(n.acc_sk, issuer_account="")),
            "user",
            "issuer-account",
        ),
        (
            "issuer_account naming another account",
            (n.op_jwt, n.acc_jwt, n.user(n.acc_sk, issuer_account=unknown.public_key)),
            "user",
            "issuer-account",
        ),
        (
            "scoped user with its own permissions",
            (n.op_jwt, n.acc_jwt, n.user(n.scoped)),
            "user",
            "scoped-with-permissions",
        ),
        ("expired user", (n.op_jwt, n.acc_jwt, n.user(expires=NOW - 1)), "user", "expired"),
        ("user not yet valid", (n.op_jwt, n.acc_jwt, n.user(not_before=NOW + 60)), "user", "not-yet-valid"),
        ("account from another operator", (n.op_jwt, stranger_op.acc_jwt), "account", "untrusted-issuer"),
        ("identity-signed user under strict mode", (s.op_jwt, s.acc_jwt, s.user(s.acc)), "user", "strict-signing"),
        (
            "identity-signed account under strict mode",
            (
                s.op_jwt,
                encode(AccountClaims(subject=KeyPair.generate("account").public_key, name="x"), s.op, clock=clock),
            ),
            "account",
            "strict-signing",
        ),
        (
            "tampered account",
            (n.op_jwt, n.acc_jwt[:-4] + ("AAAA" if not n.acc_jwt.endswith("AAAA") else "BBBB")),
            "account",
            "invalid",
        ),
        (
            "operator signed by a stranger",
            (
                encode(
                    OperatorClaims(subject=KeyPair.generate("operator").public_key, name="o"),
                    KeyPair.generate("operator"),
                ),
            ),
            "operator",
            "untrusted-issuer",
        ),
    ]


@pytest.mark.parametrize("name, links, link, reason", _cases(), ids=[c[0] for c in _cases()])
def test_broken_links_are_named(name, links, link, reason):
    with pytest.raises(ChainError) as e:
        verify_chain(*links, clock=clock)
    assert (e.value.link, e.value.reason) == (link, reason), str(e.value)
    assert str(e.value).startswith(link + ":")


def test_revoked_user_is_refused_and_a_later_one_is_not():
    n = Net()
    old = n.user()
    n.ac.revocations["*"] = NOW
    acc_jwt = encode(n.ac, n.op, clock=clock)
    with pytest.raises(ChainError) as e:
        verify_chain(n.op_jwt, acc_jwt, old, clock=clock)
    assert e.value.reason == "revoked"
    later = encode(UserClaims(subject=KeyPair.generate("user").public_key, name="n"), n.acc, clock=lambda: NOW + 1)
    verify_chain(n.op_jwt, acc_jwt, later, clock=clock)


def test_an_operator_jwt_signed_by_a_key_it_lists_itself_is_not_trusted():
    n = Net()
    forger = KeyPair.generate("operator")
    fake = OperatorClaims(subject=n.op.public_key, name="op", signing_keys=[forger.public_key])
    fake_jwt = encode(fake, forger, clock=clock)
    acc_jwt = encode(AccountClaims(subject=n.acc.public_key, name="acc"), forger, clock=clock)
    with pytest.raises(ChainError) as e:
        verify_chain(fake_jwt, acc_jwt, clock=clock)
    assert (e.value.link, e.value.reason) == ("operator", "untrusted-issuer")
    # the operator's own signature over the same list makes the forger's key the operator's word
    assert verify_chain(encode(fake, n.op, clock=clock), acc_jwt, clock=clock).account is not None
