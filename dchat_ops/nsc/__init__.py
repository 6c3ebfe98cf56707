"""Identities and credentials: nkeys, JWT v2 claims, creds files and the nsc-compatible store."""

from dchat_ops.nsc.claims import (
    AccountClaims,
    ActivationClaims,
    OperatorClaims,
    UserClaims,
)
from dchat_ops.nsc.creds import Creds, format_creds, parse_creds
from dchat_ops.nsc.jwt import decode, encode, verify_chain
from dchat_ops.nsc.keys import KeyPair
from dchat_ops.nsc.store import Store

__all__ = [
    "AccountClaims",
    "ActivationClaims",
    "Creds",
    "KeyPair",
    "OperatorClaims",
    "Store",
    "UserClaims",
    "decode",
    "encode",
    "format_creds",
    "parse_creds",
    "verify_chain",
]
