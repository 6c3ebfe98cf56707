"""The public face of the package: ``dchat_ops.__all__``, lazy names, the error tree, a light import."""

from __future__ import annotations

import ast
import doctest
import importlib
import importlib.metadata
import inspect
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

import dchat_ops
from dchat_ops import errors

PUBLIC = [n for n in dchat_ops.__all__ if n != "__version__"]


def test_all_is_sorted_and_unique():
    assert dchat_ops.__all__ == sorted(dchat_ops.__all__)
    assert len(set(dchat_ops.__all__)) == len(dchat_ops.__all__)


def test_all_and_the_lazy_table_name_the_same_things():
    assert set(PUBLIC) == set(dchat_ops._LAZY)


@pytest.mark.parametrize("name", PUBLIC)
def test_every_name_resolves_to_the_object_of_its_module(name):
    value = getattr(dchat_ops, name)
    module = importlib.import_module(dchat_ops._LAZY[name])
    assert value is getattr(module, name)


def test_the_type_checking_imports_match_the_lazy_table():
    """Type checkers see the ``if TYPE_CHECKING:`` imports, the runtime sees ``_LAZY``: they must agree."""
    tree = ast.parse(Path(dchat_ops.__file__).read_text())
    block = next(n for n in tree.body if isinstance(n, ast.If) and ast.unparse(n.test) == "TYPE_CHECKING")
    imported = {}
    for node in block.body:
        assert isinstance(node, ast.ImportFrom)
        for alias in node.names:
            assert alias.asname is None
            imported[alias.name] = node.module
    assert imported == dchat_ops._LAZY


def test_every_error_class_of_errors_is_exported():
    classes = {
        name: cls
        for name, cls in vars(errors).items()
        if inspect.isclass(cls) and issubclass(cls, Exception) and not name.startswith("_")
    }
    assert set(classes) == set(errors.__all__)
    for name, cls in classes.items():
        assert name in dchat_ops.__all__, name
        assert getattr(dchat_ops, name) is cls


def test_every_exported_error_belongs_to_the_tree_and_is_drawn():
    for name in PUBLIC:
        if name.endswith("Error"):
            assert issubclass(getattr(dchat_ops, name), errors.DchatOpsError), name
            assert re.search(rf"── {name}\b", errors.__doc__) or name == "DchatOpsError", f"{name} is not in the tree"


def test_the_errors_docstring_example_runs():
    result = doctest.testmod(errors, optionflags=doctest.ELLIPSIS)
    assert result.attempted and not result.failed


def test_unknown_names_raise_attribute_error():
    with pytest.raises(AttributeError, match="no_such_thing"):
        _ = dchat_ops.no_such_thing


def test_dir_lists_the_public_names():
    assert set(dchat_ops.__all__) <= set(dir(dchat_ops))


def test_version_is_the_installed_distribution_version():
    assert dchat_ops.__version__ == importlib.metadata.version("dchat-ops")


def test_import_is_light():
    """``import dchat_ops`` loads none of the heavy dependencies; the first use of a name does."""
    heavy = ["cryptography.x509", "nats", "ruamel.yaml"]
    code = (
        "import json, sys\n"
        "import dchat_ops\n"
        f"before = [m for m in {heavy!r} if m in sys.modules]\n"
        "dchat_ops.KeyPair\n"
        "print(json.dumps({'before': before, 'keys': 'dchat_ops.nsc.keys' in sys.modules}))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60)
    seen = json.loads(out.stdout)
    assert seen == {"before": [], "keys": True}
