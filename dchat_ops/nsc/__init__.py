"""Identities and credentials: nkeys, JWT v2 claims, creds files and the nsc-compatible store."""

from .claims import AccountClaims, ActivationClaims, OperatorClaims, UserClaims
from .creds import Creds, format_creds, parse_creds
from .jwt import decode, encode, verify_chain
from .keys import KeyPair
from .store import Store

__all__ = [
    "AccountClaims", "ActivationClaims", "OperatorClaims", "UserClaims", "Creds", "format_creds",
    "parse_creds", "decode", "encode", "verify_chain", "KeyPair", "Store",
]
