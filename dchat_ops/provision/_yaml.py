"""Loading a large spec fast: the document ruamel's safe loader makes, built from its C parser's events.

ruamel's loader makes a node for every scalar and resolves its tag in Python before constructing it;
for a spec of 100,000 users (a million scalars) that is most of the time spent on the spec.  Here
the C parser's events are turned into the document directly.  A plain scalar whose first character
cannot start any implicit type of the loader (a name, a subject: nearly all of a spec) is text, as
the loader's resolver would find; any other scalar is resolved and constructed by ruamel itself, so
numbers, booleans, null and dates come out exactly as they do from ruamel.

What is not plain data (tags, merge keys, mappings or lists as keys, duplicate keys, several
documents, an alias of an unknown anchor) is left to ruamel's own loader, which builds it or raises
the error it raises for it.

Nesting deeper than :data:`dchat_ops._decode.MAX_DEPTH` raises :class:`TooDeep` before any loader
builds it (ruamel's own loaders recurse per level and fail or crash on very deep documents).
"""

from __future__ import annotations

from typing import Any

from ruamel.yaml import YAML
from ruamel.yaml.error import YAMLError
from ruamel.yaml.events import (
    AliasEvent,
    DocumentStartEvent,
    MappingEndEvent,
    MappingStartEvent,
    ScalarEvent,
    SequenceEndEvent,
    SequenceStartEvent,
)
from ruamel.yaml.nodes import ScalarNode

from dchat_ops._decode import BAD_SCALAR, MAX_DEPTH, quietly, yaml_too_deep

__all__ = ["BadScalar", "TooDeep", "load_yaml"]

_STR = "tag:yaml.org,2002:str"
_MERGE = "tag:yaml.org,2002:merge"


class _Unsupported(Exception):
    """Something for ruamel's own loader."""


class TooDeep(ValueError):
    """Collections nested deeper than MAX_DEPTH; ``line`` is where the level too many starts."""

    def __init__(self, line: int):
        super().__init__(f"line {line}: nested deeper than {MAX_DEPTH} levels")
        self.line = line


class BadScalar(ValueError):
    """A plain scalar ruamel takes for a number or a date that is not one; ``line`` is where (or None)."""

    def __init__(self, value: str, line: int | None):
        super().__init__(value)
        self.value = value
        self.line = line


def load_yaml(text: str) -> Any:
    """``YAML(typ="safe").load(text)``, faster on large documents of plain data; TooDeep for a document
    nested deeper than MAX_DEPTH."""
    try:
        return _from_events(YAML(typ="safe"), text)
    except _Unsupported:
        line = yaml_too_deep(text)
        if line is not None:
            raise TooDeep(line) from None
        try:
            return quietly(YAML(typ="safe").load, text)
        except BAD_SCALAR as exc:
            raise BadScalar(str(exc), None) from None


class _Mapping:
    __slots__ = ("key", "value")

    def __init__(self) -> None:
        self.value: dict[Any, Any] = {}
        self.key: Any = _Mapping  # _Mapping itself: no key read yet


def _from_events(yaml: YAML, text: str) -> Any:
    resolver, constructor = yaml.resolver, yaml.constructor
    implicit_first = resolver.versioned_resolver  # first character -> the implicit types it may start
    any_first = None in implicit_first  # a type that any first character may start: resolve every scalar

    made: dict[str, Any] = {}  # plain scalar -> its value (all immutable: numbers, booleans, None, dates, text)

    def typed(value: str) -> Any:
        if value in made:
            return made[value]
        tag = resolver.resolve(ScalarNode, value, (True, False))
        if str(tag) == _MERGE:
            raise _Unsupported
        try:
            out = value if str(tag) == _STR else constructor.construct_object(ScalarNode(tag, value), deep=True)
        except YAMLError:
            raise _Unsupported from None  # ruamel's loader raises it again, saying where
        except BAD_SCALAR:
            raise BadScalar(value, None) from None
        made[value] = out
        return out

    texts: dict[str, str] = {}
    stack: list[Any] = []  # open collections: a list, or a _Mapping
    anchors: dict[str, Any] = {}
    root: Any = None
    documents = 0

    def add(value: Any, is_collection: bool) -> None:
        nonlocal root
        if not stack:
            root = value
            return
        top = stack[-1]
        if type(top) is list:
            top.append(value)
        elif top.key is _Mapping:
            if is_collection:
                raise _Unsupported  # a mapping or list as a key
            if value in top.value:
                raise _Unsupported  # a duplicate key: ruamel says where
            top.key = value
        else:
            top.value[top.key] = value
            top.key = _Mapping

    for event in yaml.parse(text):
        kind = type(event)
        if kind is ScalarEvent:
            if event.tag is not None:
                raise _Unsupported
            value = event.value
            if event.implicit[0] and (any_first or not value or value[0] in implicit_first):
                try:
                    value = typed(value)
                except BadScalar as exc:
                    exc.line = event.start_mark.line + 1 if event.start_mark is not None else None
                    raise
            elif type(value) is str:  # one object per distinct text: keys and subjects repeat in every user
                value = texts.setdefault(value, value)
            if event.anchor is not None:
                anchors[event.anchor] = value
            add(value, False)
        elif kind is MappingStartEvent or kind is SequenceStartEvent:
            if event.tag is not None:
                raise _Unsupported
            collection: Any = _Mapping() if kind is MappingStartEvent else []
            inner = collection.value if kind is MappingStartEvent else collection
            if event.anchor is not None:
                anchors[event.anchor] = inner
            add(inner, True)
            stack.append(collection)
            if len(stack) > MAX_DEPTH:
                raise TooDeep(event.start_mark.line + 1 if event.start_mark is not None else 1)
        elif kind is MappingEndEvent or kind is SequenceEndEvent:
            stack.pop()
        elif kind is AliasEvent:
            if event.anchor not in anchors:
                raise _Unsupported
            value = anchors[event.anchor]
            add(value, isinstance(value, (dict, list)))
        elif kind is DocumentStartEvent:
            documents += 1
            if documents > 1:
                raise _Unsupported
    return root
