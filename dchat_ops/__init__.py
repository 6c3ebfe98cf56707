"""dchat-ops: credentials and configuration for decentralized NATS chat networks.

The library is the product; the ``dchat-ops`` command line is a thin layer over it.  What a Python
user needs is importable from here; the names resolve on first use, so ``import dchat_ops`` stays
cheap (no cryptography or nats until something asks for them).

    import dchat_ops

    store = dchat_ops.Store("/tmp/dchat")
    dchat_ops.init(store)
    user = dchat_ops.decode(store.user("chat", "default").token)
    print(user.name, user.permissions.sub.allow)

The submodules (``dchat_ops.nsc``, ``dchat_ops.config``, ``dchat_ops.runtime``, ...) hold the rest.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# public name -> the module that defines it
_LAZY: dict[str, str] = {
    # errors
    "ApplyError": "dchat_ops.errors",
    "BundleError": "dchat_ops.errors",
    "ChainError": "dchat_ops.errors",
    "ChatError": "dchat_ops.errors",
    "ConfigError": "dchat_ops.errors",
    "CredsError": "dchat_ops.errors",
    "DchatOpsError": "dchat_ops.errors",
    "EnrollError": "dchat_ops.errors",
    "ExistsError": "dchat_ops.errors",
    "KeyInUseError": "dchat_ops.errors",
    "FieldError": "dchat_ops.errors",
    "JWTError": "dchat_ops.errors",
    "NKeyError": "dchat_ops.errors",
    "ServerError": "dchat_ops.errors",
    "SpecError": "dchat_ops.errors",
    "StoreBehindError": "dchat_ops.errors",
    "StoreError": "dchat_ops.errors",
    "TLSError": "dchat_ops.errors",
    # identities: keys, claims, JWTs, creds, bundles
    "KeyPair": "dchat_ops.nsc.keys",
    "PublicKey": "dchat_ops.nsc.keys",
    "AccountClaims": "dchat_ops.nsc.claims",
    "AccountLimits": "dchat_ops.nsc.claims",
    "ActivationClaims": "dchat_ops.nsc.claims",
    "Claims": "dchat_ops.nsc.claims",
    "Export": "dchat_ops.nsc.claims",
    "Import": "dchat_ops.nsc.claims",
    "JetStreamLimits": "dchat_ops.nsc.claims",
    "OperatorClaims": "dchat_ops.nsc.claims",
    "Permission": "dchat_ops.nsc.claims",
    "Permissions": "dchat_ops.nsc.claims",
    "ScopedSigningKey": "dchat_ops.nsc.claims",
    "UserClaims": "dchat_ops.nsc.claims",
    "UserPermissionLimits": "dchat_ops.nsc.claims",
    "ChainResult": "dchat_ops.nsc.jwt",
    "decode": "dchat_ops.nsc.jwt",
    "decode_unverified": "dchat_ops.nsc.jwt",
    "encode": "dchat_ops.nsc.jwt",
    "verify_chain": "dchat_ops.nsc.jwt",
    "Creds": "dchat_ops.nsc.creds",
    "format_creds": "dchat_ops.nsc.creds",
    "parse_creds": "dchat_ops.nsc.creds",
    "open_bundle": "dchat_ops.nsc.bundle",
    "seal_bundle": "dchat_ops.nsc.bundle",
    # the store and what changes it
    "Entity": "dchat_ops.nsc.store",
    "Store": "dchat_ops.nsc.store",
    "UserSpec": "dchat_ops.nsc.admin",
    "add_account": "dchat_ops.nsc.admin",
    "add_user": "dchat_ops.nsc.admin",
    "edit_account": "dchat_ops.nsc.admin",
    "edit_operator": "dchat_ops.nsc.admin",
    "edit_user": "dchat_ops.nsc.admin",
    "generate_creds": "dchat_ops.nsc.admin",
    "init": "dchat_ops.nsc.admin",
    "remove_account": "dchat_ops.nsc.admin",
    "revoke_user": "dchat_ops.nsc.revoke",
    "unrevoke": "dchat_ops.nsc.revoke",
    "Finding": "dchat_ops.nsc.describe",
    "describe_file": "dchat_ops.nsc.describe",
    "describe_token": "dchat_ops.nsc.describe",
    "list_store": "dchat_ops.nsc.describe",
    "validate_store": "dchat_ops.nsc.describe",
    # servers and nodes
    "ServerConfig": "dchat_ops.config.server",
    "standalone_config": "dchat_ops.config.server",
    "add_node": "dchat_ops.config.nodes",
    "ServerProcess": "dchat_ops.runtime.process",
    "Supervisor": "dchat_ops.runtime.supervisor",
    "pull": "dchat_ops.runtime.push",
    "push": "dchat_ops.runtime.push",
    "apply_node_edit": "dchat_ops.permissions.apply",
    "apply_user_edit": "dchat_ops.permissions.apply",
    # chat and the self-check
    "ChatClient": "dchat_ops.chat.client",
    "ChatIdentity": "dchat_ops.chat.client",
    "run_verify": "dchat_ops.verify",
}

__all__ = [
    "AccountClaims",
    "AccountLimits",
    "ActivationClaims",
    "ApplyError",
    "BundleError",
    "ChainError",
    "ChainResult",
    "ChatClient",
    "ChatError",
    "ChatIdentity",
    "Claims",
    "ConfigError",
    "Creds",
    "CredsError",
    "DchatOpsError",
    "EnrollError",
    "Entity",
    "ExistsError",
    "Export",
    "FieldError",
    "Finding",
    "Import",
    "JWTError",
    "JetStreamLimits",
    "KeyInUseError",
    "KeyPair",
    "NKeyError",
    "OperatorClaims",
    "Permission",
    "Permissions",
    "PublicKey",
    "ScopedSigningKey",
    "ServerConfig",
    "ServerError",
    "ServerProcess",
    "SpecError",
    "Store",
    "StoreBehindError",
    "StoreError",
    "Supervisor",
    "TLSError",
    "UserClaims",
    "UserPermissionLimits",
    "UserSpec",
    "__version__",
    "add_account",
    "add_node",
    "add_user",
    "apply_node_edit",
    "apply_user_edit",
    "decode",
    "decode_unverified",
    "describe_file",
    "describe_token",
    "edit_account",
    "edit_operator",
    "edit_user",
    "encode",
    "format_creds",
    "generate_creds",
    "init",
    "list_store",
    "open_bundle",
    "parse_creds",
    "pull",
    "push",
    "remove_account",
    "revoke_user",
    "run_verify",
    "seal_bundle",
    "standalone_config",
    "unrevoke",
    "validate_store",
    "verify_chain",
]


def __getattr__(name: str) -> Any:
    """Import the module behind a public name on first use (PEP 562) and keep the value here."""
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


if TYPE_CHECKING:  # the same names for type checkers and editors, which do not run __getattr__
    from dchat_ops.chat.client import ChatClient, ChatIdentity
    from dchat_ops.config.nodes import add_node
    from dchat_ops.config.server import ServerConfig, standalone_config
    from dchat_ops.errors import (
        ApplyError,
        BundleError,
        ChainError,
        ChatError,
        ConfigError,
        CredsError,
        DchatOpsError,
        EnrollError,
        ExistsError,
        FieldError,
        JWTError,
        KeyInUseError,
        NKeyError,
        ServerError,
        SpecError,
        StoreBehindError,
        StoreError,
        TLSError,
    )
    from dchat_ops.nsc.admin import (
        UserSpec,
        add_account,
        add_user,
        edit_account,
        edit_operator,
        edit_user,
        generate_creds,
        init,
        remove_account,
    )
    from dchat_ops.nsc.bundle import open_bundle, seal_bundle
    from dchat_ops.nsc.claims import (
        AccountClaims,
        AccountLimits,
        ActivationClaims,
        Claims,
        Export,
        Import,
        JetStreamLimits,
        OperatorClaims,
        Permission,
        Permissions,
        ScopedSigningKey,
        UserClaims,
        UserPermissionLimits,
    )
    from dchat_ops.nsc.creds import Creds, format_creds, parse_creds
    from dchat_ops.nsc.describe import Finding, describe_file, describe_token, list_store, validate_store
    from dchat_ops.nsc.jwt import ChainResult, decode, decode_unverified, encode, verify_chain
    from dchat_ops.nsc.keys import KeyPair, PublicKey
    from dchat_ops.nsc.revoke import revoke_user, unrevoke
    from dchat_ops.nsc.store import Entity, Store
    from dchat_ops.permissions.apply import apply_node_edit, apply_user_edit
    from dchat_ops.runtime.process import ServerProcess
    from dchat_ops.runtime.push import pull, push
    from dchat_ops.runtime.supervisor import Supervisor
    from dchat_ops.verify import run_verify
