"""Declarative provisioning: a whole network from one spec file, as plan / apply, idempotent and fast.

    >>> spec = load_spec(Path("network.yaml"))          # validated; errors name file, line and field
    >>> p = plan(store, spec)                            # what would be created, re-issued, revoked...
    >>> result = apply(store, spec)                      # does it; a second apply changes nothing
    >>> [(n.node, n.outcome) for n in result.nodes]      # live, saved (for the next start), rolled-back

The spec is plain YAML data (see docs/ci.md for the full reference).  ``${VAR}`` in a string takes
the value of an environment variable, for secrets and paths that must not live in the repository.

The parts: :mod:`.schema` loads and validates a spec (user and role fields through the library's own
validators in :mod:`dchat_ops.nsc.spec`), :mod:`.plan` compares it with the store and lists the work,
:mod:`.apply` executes that list (nodes through the same live transaction as ``allow-sub``),
:mod:`.state` keeps the fingerprints that make an unchanged re-apply fast, :mod:`.export` writes a
spec from a store.
"""

from __future__ import annotations

from dchat_ops.provision.apply import ApplyResult, NodeOutcome, apply
from dchat_ops.provision.export import dump_spec, export_spec
from dchat_ops.provision.plan import Change, Plan, plan
from dchat_ops.provision.schema import Spec, SpecError, load_spec, parse_spec, spec_cache_dir

__all__ = [
    "ApplyResult",
    "Change",
    "NodeOutcome",
    "Plan",
    "Spec",
    "SpecError",
    "apply",
    "dump_spec",
    "export_spec",
    "load_spec",
    "parse_spec",
    "plan",
    "spec_cache_dir",
]
