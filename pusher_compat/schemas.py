"""Structural checks of what clients send, against the JSON Schemas in ``protocol/``.

Every WebSocket frame a client sends and every HTTP API request body has a JSON Schema (draft
2020-12) in the repository's top-level ``protocol/`` folder, one file per message. They live
there as plain JSON, not as Python code, because they are also documentation: client authors
can read them, or feed them to their own tooling, to learn exactly which shapes the server
accepts, without reading the server. The wheel force-includes the folder as
``pusher_compat/protocol``; a source checkout or an editable install reads it in place.

The schemas are structural only (types, required members, patterns fixed by the protocol).
Configurable limits such as name lengths, channel counts and payload sizes are checked by the
server itself, with its own error messages.

Every message of the hot paths (a publish, a client event) is checked, so the verdict does not
come from jsonschema, which spends 20 to 50 µs on a small body: each schema is compiled, when
the schemas load, into plain Python closures for the keywords the schemas use (``_KEYWORDS``),
about 1 µs per small message. A keyword the compiler does not implement stops the loading with
:class:`UnsupportedSchema` rather than being skipped. jsonschema stays the reference: it runs
on the same schema only once the compiled check has refused an instance, to word the error, and
the tests hold the two verdicts equal.
"""

from __future__ import annotations

import json
import math
import numbers
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from importlib.resources import files
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import Any

from jsonschema import Draft202012Validator
from jsonschema.exceptions import ValidationError, best_match

__all__ = ["UnsupportedSchema", "validate"]

# Offending values longer than this (as Python reprs) are cut in error lines, so that a
# 10 KB payload is not echoed back to the client or into the logs.
_MAX_VALUE_CHARS = 80

Check = Callable[[Any], bool]
"""A compiled schema: called with a parsed JSON value, says whether the schema accepts it."""


class UnsupportedSchema(ValueError):
    """A protocol schema uses a keyword (or a ``$ref``) that :func:`_compile` does not implement.

    Raised when the schemas are loaded, never later: a keyword the compiled check skipped
    would silently accept what jsonschema refuses.
    """


@dataclass(frozen=True, slots=True)
class _Schema:
    """One protocol schema, ready to check instances."""

    check: Check
    """The fast verdict, compiled from the schema: the tests hold it equal to jsonschema's."""

    validator: Draft202012Validator
    """jsonschema on the same schema: run only on an invalid instance, to word the error."""


# Schema name (file name without ".json") -> the schema, filled on first use.
_schemas: dict[str, _Schema] = {}


def validate(name: str, instance: object) -> str | None:
    """Check ``instance`` against the schema ``protocol/<name>.json``.

    Returns ``None`` when ``instance`` is valid, else one line saying what is wrong: the JSON
    path of the offending value (``$`` for the instance itself) and jsonschema's message for
    the most relevant error, e.g. ``"$.channel: 5 is not of type 'string'"``. When that error
    is a ``oneOf``/``anyOf`` none of whose alternatives fits better than the others, the line
    ends with each alternative's own error in parentheses. Offending values longer than
    ``_MAX_VALUE_CHARS`` characters are cut and end in ``...``.

    Raises ``KeyError`` when there is no schema called ``name``, and
    :class:`UnsupportedSchema` (on the first call) when a schema cannot be compiled.
    """
    schema = _schemas.get(name) or _schema(name)
    if schema.check(instance):
        # The common case, decided by the compiled check alone (jsonschema's own is_valid costs
        # 10 to 30 times more on a small frame).
        return None
    error = best_match(schema.validator.iter_errors(instance))
    if error is None:
        # jsonschema, the reference, accepts it: follow it (the tests keep this unreachable).
        return None
    line = _describe(error)
    if error.context:
        # best_match stops at a oneOf/anyOf when all its alternatives fail equally (neither
        # `channel` nor `channels`, say): name what each alternative was missing.
        line += " (" + "; ".join(_describe(cause) for cause in error.context) + ")"
    return line


def _schema(name: str) -> _Schema:
    """The schema called ``name``; loads every schema on the first call."""
    if not _schemas:
        _schemas.update(_load_all())
    try:
        return _schemas[name]
    except KeyError:
        known = ", ".join(sorted(_schemas))
        raise KeyError(f"no protocol schema named {name!r} (known: {known})") from None


def _load_all() -> dict[str, _Schema]:
    """Read, check (``check_schema``) and compile every ``*.json`` file of the schema folder."""
    documents = {entry.name: json.loads(entry.read_text(encoding="utf-8"))
                 for entry in _protocol_dir().iterdir() if entry.name.endswith(".json")}
    loaded = {}
    for name, document in documents.items():
        Draft202012Validator.check_schema(document)
        schema = _inline_refs(document, document, (), documents)
        loaded[name.removesuffix(".json")] = _Schema(
            _compile(schema, f"protocol/{name}"), Draft202012Validator(schema))
    return loaded


# -- the compiler ------------------------------------------------------------------------------
#
# Each schema becomes one closure per subschema, built once. Keywords that only concern one
# JSON type (``required`` concerns objects, ``pattern`` strings...) are gathered into one
# closure per type; a subschema with a single ``type`` keeps only that type's closure, since
# every other type fails the type test anyway. Subschemas that accept everything (``{}``, as
# the schemas give ``data``) are dropped from their parent rather than called.

# Keywords that say nothing about validity: accepted anywhere, and ignored.
_ANNOTATION_KEYWORDS = frozenset({"title", "description", "examples", "$comment"})

# Keywords that only mean something at a document's root: below it, ``$id`` would change what
# a ``#/...`` reference points at, which the compiler does not follow.
_ROOT_KEYWORDS = frozenset({"$schema", "$id"})

# Keywords checked for an instance of one JSON type only (every other type passes them).
_OBJECT_KEYWORDS = frozenset({"required", "properties"})
_ARRAY_KEYWORDS = frozenset({"items", "minItems", "maxItems"})
_STRING_KEYWORDS = frozenset({"minLength", "maxLength", "pattern"})

# Everything the compiler implements; any other keyword is refused with UnsupportedSchema.
_KEYWORDS = (_OBJECT_KEYWORDS | _ARRAY_KEYWORDS | _STRING_KEYWORDS
             | {"type", "const", "enum", "oneOf", "$ref", "$defs"})


def _anything(instance: Any) -> bool:
    """The check of ``true`` and ``{}``: every instance is valid."""
    return True


def _nothing(instance: Any) -> bool:
    """The check of ``false``: no instance is valid."""
    return False


def _is_integer(instance: Any) -> bool:
    # Draft 2020-12 (and jsonschema): 1.0 is an integer; true is not, though bool is an int.
    if isinstance(instance, float):
        return instance.is_integer()
    return isinstance(instance, int) and not isinstance(instance, bool)


def _is_number(instance: Any) -> bool:
    # numbers.Number, not (int, float): jsonschema's own test, kept for identical verdicts.
    return isinstance(instance, numbers.Number) and not isinstance(instance, bool)


# JSON type name -> its test, as jsonschema's draft 2020-12 type checker decides it.
_TYPE_TESTS: dict[str, Check] = {
    "array": lambda instance: isinstance(instance, list),
    "boolean": lambda instance: isinstance(instance, bool),
    "integer": _is_integer,
    "null": lambda instance: instance is None,
    "number": _is_number,
    "object": lambda instance: isinstance(instance, dict),
    "string": lambda instance: isinstance(instance, str),
}

# The Python class of the JSON types whose keywords have their own closure.
_CLASSES: dict[str, type] = {"object": dict, "array": list, "string": str}

# The check of a bare ``{"type": "string"}`` (or object, array) -> the class it tests: an
# object's members of such a schema are tested inline, without calling it.
_BARE_TYPE_CLASSES: dict[Check, type] = {_TYPE_TESTS[name]: cls for name, cls in _CLASSES.items()}


def _compile(schema: Any, source: str) -> Check:
    """The check of ``schema`` (``source`` names it in errors): true iff the schema accepts.

    Implements the keywords of ``_KEYWORDS`` with jsonschema's draft 2020-12 meaning, and
    ``$ref`` to a JSON pointer within ``schema`` (``#/...``), cycles included. Raises
    :class:`UnsupportedSchema` for any other keyword or reference.
    """
    return _Compiler(schema, source).subschema(schema, ())


class _Compiler:
    """Compiles the subschemas of one schema, each once (so that references can share them)."""

    def __init__(self, root: Any, source: str) -> None:
        self._root = root
        """The whole schema: what ``#/...`` references point into."""
        self._source = source
        """How errors name the schema, e.g. ``protocol/api-event.json``."""
        self._compiled: dict[tuple[str, ...], Check] = {}
        """Location of a subschema (the parts of its JSON pointer) -> its check."""

    def subschema(self, node: Any, path: tuple[str, ...]) -> Check:
        """The check of ``node``, found at ``path``, compiled on the first request.

        While ``node`` is being compiled, a reference back to it (a cycle) gets a stand-in
        that calls the finished check.
        """
        known = self._compiled.get(path)
        if known is not None:
            return known
        finished: list[Check] = []
        self._compiled[path] = lambda instance: finished[0](instance)
        check = self._build(node, path)
        finished.append(check)
        self._compiled[path] = check
        return check

    def _build(self, node: Any, path: tuple[str, ...]) -> Check:
        """The check of ``node`` (a subschema: a bool or a dict of keywords)."""
        if node is True:
            return _anything
        if node is False:
            return _nothing
        unknown = node.keys() - _KEYWORDS - _ANNOTATION_KEYWORDS - (
            _ROOT_KEYWORDS if not path else frozenset())
        if unknown:
            raise UnsupportedSchema(
                f"{self._where(path)}: the compiled validation does not implement "
                f"{', '.join(repr(keyword) for keyword in sorted(unknown))} (it implements "
                f"{', '.join(sorted(_KEYWORDS))}); implement it in schemas.py before using it")
        for name, definition in node.get("$defs", {}).items():
            # Compiled even when nothing refers to it, so that its keywords are checked too.
            self.subschema(definition, (*path, "$defs", name))
        by_type = {
            "object": self._object(node, path),
            "array": self._array(node, path),
            "string": self._string(node, path),
        }
        others = [self._any_type(keyword, node[keyword], (*path, keyword))
                  for keyword in ("const", "enum", "oneOf", "$ref") if keyword in node]
        types = node.get("type")
        if isinstance(types, str) and types in _CLASSES:
            inner = _every([by_type[types], *others])
            if inner is _anything:
                return _TYPE_TESTS[types]
            cls = _CLASSES[types]
            return lambda instance: isinstance(instance, cls) and inner(instance)
        if types is not None:
            others.insert(0, _type_test([types] if isinstance(types, str) else types))
        return _every([_dispatch(by_type), *others])

    def _object(self, node: Mapping[str, Any], path: tuple[str, ...]) -> Check:
        """The check of ``required`` and ``properties``, given a dict."""
        required = tuple(node.get("required", ()))
        members = [(name, self.subschema(subschema, (*path, "properties", name)))
                   for name, subschema in node.get("properties", {}).items()]
        # A member's check that is only a type test is done inline: a call less per member.
        typed = tuple((name, _BARE_TYPE_CLASSES[member]) for name, member in members
                      if member in _BARE_TYPE_CLASSES)
        checked = tuple((name, member) for name, member in members
                        if member is not _anything and member not in _BARE_TYPE_CLASSES)
        if not required and not typed and not checked:
            return _anything

        def check(instance: dict[str, Any]) -> bool:
            for name in required:
                if name not in instance:
                    return False
            for name, cls in typed:
                if name in instance and not isinstance(instance[name], cls):
                    return False
            for name, member in checked:
                if name in instance and not member(instance[name]):
                    return False
            return True

        return check

    def _array(self, node: Mapping[str, Any], path: tuple[str, ...]) -> Check:
        """The check of ``items``, ``minItems`` and ``maxItems``, given a list."""
        items = self.subschema(node["items"], (*path, "items")) if "items" in node else _anything
        shortest, longest = node.get("minItems", 0), node.get("maxItems", math.inf)
        if items is _anything and shortest == 0 and longest == math.inf:
            return _anything

        def check(instance: list[Any]) -> bool:
            return shortest <= len(instance) <= longest and all(map(items, instance))

        return check

    def _string(self, node: Mapping[str, Any], path: tuple[str, ...]) -> Check:
        """The check of ``minLength``, ``maxLength`` and ``pattern``, given a str."""
        # Lengths in code points, as Python's len counts them (and jsonschema with it).
        shortest, longest = node.get("minLength", 0), node.get("maxLength", math.inf)
        # re.search, not match: a JSON Schema pattern is not anchored (jsonschema does the same).
        search = re.compile(node["pattern"]).search if "pattern" in node else None
        if search is None:
            if shortest == 0 and longest == math.inf:
                return _anything
            return lambda instance: shortest <= len(instance) <= longest
        if shortest == 0 and longest == math.inf:
            return lambda instance: search(instance) is not None
        return lambda instance: (shortest <= len(instance) <= longest
                                 and search(instance) is not None)

    def _any_type(self, keyword: str, value: Any, path: tuple[str, ...]) -> Check:
        """The check of ``const``, ``enum``, ``oneOf`` or ``$ref``, given any instance."""
        if keyword == "const":
            return lambda instance: _equal(instance, value)
        if keyword == "enum":
            return lambda instance: any(_equal(instance, each) for each in value)
        if keyword == "oneOf":
            alternatives = tuple(self.subschema(subschema, (*path, str(index)))
                                 for index, subschema in enumerate(value))

            def one_of(instance: Any) -> bool:
                found = False
                for alternative in alternatives:
                    if alternative(instance):
                        if found:
                            return False
                        found = True
                return found

            return one_of
        return self._reference(value, path)

    def _reference(self, ref: str, path: tuple[str, ...]) -> Check:
        """The check of the subschema that ``ref`` (a ``#/...`` JSON pointer) points at."""
        if ref != "#" and not ref.startswith("#/"):
            raise UnsupportedSchema(
                f"{self._where(path)}: the compiled validation does not follow $ref {ref!r}: "
                "only a JSON pointer within the schema (#/...) or a sibling schema file that "
                "can be inlined (a $ref beside annotations only, outside a cycle)")
        # Not percent-decoded: jsonschema does not decode them either.
        parts = tuple(part.replace("~1", "/").replace("~0", "~")
                      for part in ref[2:].split("/")) if ref != "#" else ()
        target = self._root
        for part in parts:
            try:
                target = target[int(part)] if isinstance(target, list) else target[part]
            except (KeyError, IndexError, ValueError, TypeError):
                raise UnsupportedSchema(
                    f"{self._where(path)}: $ref {ref!r} points at nothing") from None
        return self.subschema(target, parts)

    def _where(self, path: tuple[str, ...]) -> str:
        """``source#/json/pointer`` of the subschema at ``path``."""
        return self._source + "#" + "".join(
            "/" + part.replace("~", "~0").replace("/", "~1") for part in path)


def _type_test(types: list[str]) -> Check:
    """The check of ``type``: the instance is of one of ``types``."""
    tests = tuple(_TYPE_TESTS[name] for name in types)
    if len(tests) == 1:
        return tests[0]
    return lambda instance: any(test(instance) for test in tests)


def _dispatch(by_type: Mapping[str, Check]) -> Check:
    """The check of the type-specific keywords: the closure of the instance's own type."""
    on_object, on_array, on_string = by_type["object"], by_type["array"], by_type["string"]
    if on_object is on_array is on_string is _anything:
        return _anything

    def check(instance: Any) -> bool:
        if isinstance(instance, dict):
            return on_object(instance)
        if isinstance(instance, list):
            return on_array(instance)
        if isinstance(instance, str):
            return on_string(instance)
        return True

    return check


def _every(checks: list[Check]) -> Check:
    """The check that all of ``checks`` pass (``_anything`` among them is left out)."""
    checks = [check for check in checks if check is not _anything]
    if not checks:
        return _anything
    if len(checks) == 1:
        return checks[0]
    if len(checks) == 2:
        first, second = checks
        return lambda instance: first(instance) and second(instance)
    return lambda instance: all(check(instance) for check in checks)


def _equal(one: Any, two: Any) -> bool:
    """Equality as ``const`` and ``enum`` mean it (and jsonschema decides it): ``1.0`` equals
    ``1`` but ``true`` does not, and arrays and objects compare member by member."""
    if one is two:
        return True
    if isinstance(one, str) or isinstance(two, str):
        return bool(one == two)
    if isinstance(one, list) and isinstance(two, list):
        return len(one) == len(two) and all(map(_equal, one, two))
    if isinstance(one, dict) and isinstance(two, dict):
        return len(one) == len(two) and all(
            key in two and _equal(value, two[key]) for key, value in one.items())
    if isinstance(one, bool) or isinstance(two, bool):
        return False  # two identical bools were caught by `is` above
    return bool(one == two)


# Keywords that only annotate: a ``$ref`` beside them is still inlined (they are dropped).
_ANNOTATIONS = frozenset({"$ref", "description", "title"})


def _inline_refs(node: Any, root: dict[str, Any], seen: tuple[str, ...],
                 documents: Mapping[str, Any] | None = None) -> Any:
    """``node`` with each ``{"$ref": "#/..."}`` replaced by what it points at in ``root``, and
    each ``{"$ref": "<file>.json"}`` by that sibling schema of ``documents``.

    jsonschema resolves a ``$ref`` on every validation, and for the events of a
    ``batch_events`` body that lookup cost as much as checking the event itself. A sibling file
    is how one rule (``socket-id.json``) serves several bodies. Only a reference beside nothing
    but annotations is inlined; one with other keywords, or within a cycle, stays as it is.
    """
    documents = documents or {}
    if isinstance(node, list):
        return [_inline_refs(item, root, seen, documents) for item in node]
    if not isinstance(node, dict):
        return node
    ref = node.get("$ref")
    if isinstance(ref, str) and node.keys() <= _ANNOTATIONS and ref not in seen:
        if ref.startswith("#/"):
            target: Any = root
            for part in ref[2:].split("/"):
                target = target[part.replace("~1", "/").replace("~0", "~")]
            return _inline_refs(target, root, (*seen, ref), documents)
        if ref in documents:
            # The sibling's own $schema and $id only make sense at a document's root.
            target = {k: v for k, v in documents[ref].items() if k not in ("$schema", "$id")}
            return _inline_refs(target, documents[ref], (*seen, ref), documents)
    return {key: _inline_refs(value, root, seen, documents) for key, value in node.items()}


def _protocol_dir() -> Traversable:
    """The schema folder: inside the installed package (wheel), else the checkout's."""
    packaged = files("pusher_compat") / "protocol"
    if packaged.is_dir():
        return packaged
    return Path(__file__).resolve().parent.parent / "protocol"


def _describe(error: ValidationError) -> str:
    """``<JSON path>: <message>``, with a long offending value cut to ``_MAX_VALUE_CHARS``."""
    value = repr(error.instance)
    message = error.message
    if len(value) > _MAX_VALUE_CHARS:
        message = message.replace(value, value[:_MAX_VALUE_CHARS] + "...", 1)
    return f"{error.json_path}: {message}"
