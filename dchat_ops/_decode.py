"""Reading what a person or another machine hands us: text that must be UTF-8, YAML and JSON whose
nesting is bounded, and values cut short before an error message quotes them.

Each reader takes the error class to raise, so a node file fails with a ConfigError, a spec with a
SpecError and a bundle with a BundleError, each one line naming the file.

    >>> from dchat_ops.errors import ConfigError
    >>> yaml_too_deep("a: " + "[" * 500, 100)
    1
    >>> yaml_too_deep("a: [1, [2]]", 100) is None
    True
    >>> cut("x" * 200)
    'xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx…(200 characters)'
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any, Optional

from dchat_ops.errors import MAX_SHOWN, DchatOpsError, cut

__all__ = [
    "BAD_SCALAR",
    "BAD_SCALAR_MESSAGE",
    "MAX_DEPTH",
    "MAX_SHOWN",
    "cut",
    "decode_text",
    "load_json",
    "quietly",
    "read_text",
    "round_trip_yaml",
    "yaml_problem",
    "yaml_too_deep",
]

# Deeper than any spec, node file or bundle we write (they nest 6 levels at most) and shallow enough
# for every loader we use: ruamel's C loader crashes the process on some tens of thousands of levels,
# its round-trip loader and json run out of Python stack at about a thousand, and the C parser takes
# time growing with the square of the depth of flow collections.
MAX_DEPTH = 100


def decode_text(data: bytes, where: object, error: type[DchatOpsError]) -> str:
    """``data`` as UTF-8 text; ``error`` naming ``where`` and the line of the first byte that is not."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise error(f"{where}:{line}: not UTF-8 text (byte {exc.start})") from None


def read_text(path: Path, error: type[DchatOpsError]) -> str:
    """``Path(path).read_text()`` (line ends made ``\\n``), with ``error`` for a file that is not UTF-8.

    OSError is raised as ``Path.read_text`` raises it."""
    text = decode_text(Path(path).read_bytes(), path, error)
    return text.replace("\r\n", "\n").replace("\r", "\n") if "\r" in text else text


# every collection YAML starts is marked by one of these (block sequence item, mapping value or key,
# flow sequence or mapping): a text with fewer of them cannot nest deeper than that
_OPENERS = "-:?[{"


def yaml_too_deep(text: str, limit: int = MAX_DEPTH) -> Optional[int]:
    """The line on which ``text`` nests collections more than ``limit`` deep, or None.

    Reads the parser's events only (no document is built), and stops at the first level too many.
    Text that is not valid YAML before that point is left to the loader, which says what is wrong.
    """
    if sum(text.count(c) for c in _OPENERS) <= limit:
        return None
    # ruamel.yaml here and in round_trip_yaml(), at the first use: about 17 ms that the store, which
    # reads its files through this module, never needs
    from ruamel.yaml import YAML
    from ruamel.yaml.error import YAMLError
    from ruamel.yaml.events import CollectionEndEvent, CollectionStartEvent

    depth = 0
    try:
        for event in YAML(typ="safe").parse(text):
            if isinstance(event, CollectionStartEvent):
                depth += 1
                if depth > limit:
                    mark = event.start_mark
                    return (mark.line + 1) if mark is not None else 1
            elif isinstance(event, CollectionEndEvent):
                depth -= 1
    except YAMLError:
        return None
    return None


def yaml_problem(exc: Exception, text: str = "") -> tuple[Optional[int], str]:
    """The line (or None) and the one-line problem of a ruamel YAMLError, for a message."""
    mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
    line: Optional[int] = mark.line + 1 if mark is not None else None
    position = getattr(exc, "position", None)  # a ReaderError: a character the reader refuses
    if line is None and isinstance(position, int) and text:
        line = text.count("\n", 0, position) + 1
    problem = getattr(exc, "problem", None) or (str(exc).splitlines() or [type(exc).__name__])[0]
    return line, cut(" ".join(str(problem).split()), 200)


# What ruamel's loaders raise, besides YAMLError, for a value they cannot make into the type its look or
# its tag names: a plain ``+_``, ``0x_`` or ``2020-13-45`` taken for a number or a date, ``!!omap`` on a
# scalar, a merge key of a scalar
BAD_SCALAR = (ValueError, IndexError, TypeError, OverflowError, AttributeError, KeyError)
BAD_SCALAR_MESSAGE = (
    "a value cannot be made into what it looks like or its tag says (a number, a date, ...); quote it to make it text"
)

_LINE_BREAKS = ("\x85", "\u2028", "\u2029")  # line breaks to YAML beside \n and \r
_ROUND_TRIP: list[Any] = []  # the representer class round_trip_yaml() uses, made at the first use


def round_trip_yaml() -> Any:
    """A round-trip ``ruamel.yaml.YAML()`` that writes back every string it is given.

    ruamel's round-trip emitter writes a string holding NEL (U+0085) single-quoted with the raw
    character, which its own reader then folds into a space (a subject ``a\x85b`` would come back as
    ``a b``); such strings, and those with the other Unicode line breaks, are written double-quoted,
    escaped.
    """
    from ruamel.yaml import YAML

    if not _ROUND_TRIP:
        from ruamel.yaml.representer import RoundTripRepresenter

        class Representer(RoundTripRepresenter):
            pass

        def represent_str(representer: Any, data: str) -> Any:
            if any(c in data for c in _LINE_BREAKS):
                return representer.represent_scalar("tag:yaml.org,2002:str", data, style='"')
            return representer.represent_str(data)

        Representer.add_representer(str, represent_str)
        _ROUND_TRIP.append(Representer)
    y = YAML()
    y.Representer = _ROUND_TRIP[0]
    return y


def quietly(load: Callable[[str], Any], text: str) -> Any:
    """``load(text)`` with ruamel's warnings (an anchor defined twice, ...) kept off stderr: what a
    command says about its input is one line, and a reused anchor is valid YAML 1.2."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return load(text)


def load_json(data: bytes | str, what: str, error: type[DchatOpsError]) -> Any:
    """``json.loads(data)``; ``error`` saying ``what`` is not valid JSON, not UTF-8, or nested too deeply."""
    try:
        return json.loads(data)
    except RecursionError:
        raise error(f"{what} is nested too deeply") from None
    except UnicodeDecodeError:
        raise error(f"{what} is not UTF-8 text") from None
    except ValueError:
        raise error(f"{what} is not valid JSON") from None
