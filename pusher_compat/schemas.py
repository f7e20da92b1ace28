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
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from importlib.resources import files
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import Any

from jsonschema import Draft202012Validator
from jsonschema.exceptions import ValidationError, best_match

__all__ = ["validate"]

# Offending values longer than this (as Python reprs) are cut in error lines, so that a
# 10 KB payload is not echoed back to the client or into the logs.
_MAX_VALUE_CHARS = 80

# Schema name (file name without ".json") -> compiled validator, filled on first use.
_validators: dict[str, Draft202012Validator] = {}


def validate(name: str, instance: object) -> str | None:
    """Check ``instance`` against the schema ``protocol/<name>.json``.

    Returns ``None`` when ``instance`` is valid, else one line saying what is wrong: the JSON
    path of the offending value (``$`` for the instance itself) and jsonschema's message for
    the most relevant error, e.g. ``"$.channel: 5 is not of type 'string'"``. When that error
    is a ``oneOf``/``anyOf`` none of whose alternatives fits better than the others, the line
    ends with each alternative's own error in parentheses. Offending values longer than
    ``_MAX_VALUE_CHARS`` characters are cut and end in ``...``.

    Raises ``KeyError`` when there is no schema called ``name``.
    """
    validator = _validator(name)
    if validator.is_valid(instance):
        # The common case: skip gathering and ranking errors (a third of the cost).
        return None
    error = best_match(validator.iter_errors(instance))
    if error is None:
        return None
    line = _describe(error)
    if error.context:
        # best_match stops at a oneOf/anyOf when all its alternatives fail equally (neither
        # `channel` nor `channels`, say): name what each alternative was missing.
        line += " (" + "; ".join(_describe(cause) for cause in error.context) + ")"
    return line


def _validator(name: str) -> Draft202012Validator:
    """The compiled validator for schema ``name``; loads every schema on the first call."""
    if not _validators:
        _validators.update(_load_all())
    try:
        return _validators[name]
    except KeyError:
        known = ", ".join(sorted(_validators))
        raise KeyError(f"no protocol schema named {name!r} (known: {known})") from None


def _load_all() -> dict[str, Draft202012Validator]:
    """Read, check (``check_schema``) and compile every ``*.json`` file of the schema folder."""
    documents = {entry.name: json.loads(entry.read_text(encoding="utf-8"))
                 for entry in _protocol_dir().iterdir() if entry.name.endswith(".json")}
    validators = {}
    for name, schema in documents.items():
        Draft202012Validator.check_schema(schema)
        compiled = Draft202012Validator(_inline_refs(schema, schema, (), documents))
        validators[name.removesuffix(".json")] = compiled
    return validators


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
