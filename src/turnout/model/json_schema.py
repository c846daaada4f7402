"""JSON Schemas that come from clients (response formats, tool parameters, Anthropic input
schemas and output formats) and from a route's `output_schema`: checked once, while the
request is decoded (dialects/errors.py `check_schema`), so an unusable schema is a 400 before
any upstream is called, and when the output guard validates an answer against it.

A schema is someone else's program that the gateway runs, so it is kept on a short leash:
- it never causes I/O: references resolve inside the schema itself (`#/$defs/...`, embedded
  `$id`s) or to the bundled metaschemas; anything else (http, file, ...) is refused;
- its size and nesting are bounded, so checking it and validating answers against it cannot
  exhaust the stack or the CPU;
- references that loop without consuming any of the answer (`{"$ref": "#"}` at the root,
  `allOf` back to itself) are refused: validating against them never ends;
- its regular expressions (`pattern`, `patternProperties`) run with a time limit, so a
  catastrophically backtracking one cannot freeze the event loop on a model's answer.

Pure: no I/O, and the only state is a bounded cache of results, keyed by a digest of the
schema, so a client sending the same tools on every request pays for the check once.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import orjson
import referencing.jsonschema
import regex
from jsonschema import SchemaError, ValidationError, validators
from jsonschema.protocols import Validator
from jsonschema_specifications import REGISTRY as METASCHEMAS
from referencing import Registry, Resource
from referencing.exceptions import NoSuchResource, Unresolvable

MAX_SCHEMA_BYTES = 64 * 1024  # serialised; OpenAI's own limit for a structured-output schema
MAX_SCHEMA_DEPTH = 64  # JSON nesting: about 30 levels of nested objects, well inside the stack
_CACHE_SIZE = 256
# one regular expression search on one string of an answer; Python's `re` has no time limit,
# and `(a|aa)+$` on 40 characters takes it minutes. The `regex` module (tiktoken's own
# dependency) speaks the same syntax and stops at a timeout.
PATTERN_TIMEOUT = 0.05

_REF_KEYWORDS = ("$ref", "$dynamicRef", "$recursiveRef")
# keywords whose subschemas apply to the same instance: a reference loop through only these
# never reaches a smaller piece of the answer, so validation would never end
_IN_PLACE_ONE = ("not", "if", "then", "else")
_IN_PLACE_MANY = ("allOf", "anyOf", "oneOf")


def _refuse(uri: str) -> Resource[Any]:
    # referencing builds its exceptions with its own attrs wrapper, which mypy cannot see into
    raise NoSuchResource(ref=uri)  # type: ignore[call-arg]


# a registry that never fetches: what is not in the schema or the bundled metaschemas is
# unresolvable. jsonschema adds the bundled metaschemas to it itself.
NO_RETRIEVAL: Registry[Any] = Registry(retrieve=_refuse)  # type: ignore[call-arg]


class UnusableSchema(ValueError):
    """The schema cannot be used; the message says why, without naming the field."""


@dataclass(frozen=True, slots=True)
class _Checked:
    problem: str | None
    validator: Validator | None


_cache: OrderedDict[bytes, _Checked] = OrderedDict()


def checked(schema: Any) -> Validator:
    """A validator for `schema`, which never does I/O; UnusableSchema when there is none."""
    if not isinstance(schema, dict):
        raise UnusableSchema(f"must be a JSON Schema object, not {_json_type(schema)}")
    if _depth(schema) > MAX_SCHEMA_DEPTH:  # first: serialising it recurses
        raise UnusableSchema(f"nests deeper than {MAX_SCHEMA_DEPTH} levels")
    try:
        text = orjson.dumps(schema, option=orjson.OPT_SORT_KEYS)
    except TypeError:  # keys that are not strings: possible from YAML config only
        raise UnusableSchema("must be a JSON object with string keys") from None
    if len(text) > MAX_SCHEMA_BYTES:
        raise UnusableSchema(f"is {len(text)} bytes long; the limit is {MAX_SCHEMA_BYTES}")
    key = hashlib.blake2b(text, digest_size=16).digest()
    entry = _cache.get(key)
    if entry is None:
        entry = _check(orjson.loads(text))
        _cache[key] = entry
        if len(_cache) > _CACHE_SIZE:
            _cache.popitem(last=False)
    else:
        _cache.move_to_end(key)
    if entry.problem is not None:
        raise UnusableSchema(entry.problem)
    assert entry.validator is not None
    return entry.validator


def _check(schema: dict[str, Any]) -> _Checked:
    try:
        return _Checked(None, _validator(schema))
    except UnusableSchema as exc:
        return _Checked(str(exc), None)


def _validator(schema: dict[str, Any]) -> Validator:
    dialect = schema.get("$schema")
    try:
        specification = (
            referencing.jsonschema.DRAFT202012
            if dialect is None
            else referencing.jsonschema.specification_with(dialect)
        )
    except (referencing.jsonschema.UnknownDialect, TypeError):
        raise UnusableSchema(f"names a $schema turnout does not know: {str(dialect)[:100]}")
    cls = validators.validator_for(schema)
    try:
        cls.check_schema(schema)
    except SchemaError as exc:
        where = "/".join(str(p) for p in exc.absolute_path) or "(root)"
        raise UnusableSchema(f"not a valid JSON Schema at {where}: {exc.message[:200]}") from None
    _check_references(specification.create_resource(schema))
    timed = validators.extend(cls, validators=_TIMED_KEYWORDS)
    return timed(schema, registry=NO_RETRIEVAL)


def _search(pattern: str, text: str) -> bool | None:
    """Whether `pattern` matches in `text`; None when it could not tell within the limit."""
    try:
        return regex.search(pattern, text, timeout=PATTERN_TIMEOUT) is not None
    except TimeoutError:
        return None


def _pattern(validator: Validator, pattern: str, instance: Any, schema: Any) -> Iterator[Any]:
    if not validator.is_type(instance, "string"):
        return
    found = _search(pattern, instance)
    if found is None:
        yield ValidationError(f"the pattern {pattern[:100]!r} took too long to check")
    elif not found:
        yield ValidationError(f"{instance[:100]!r} does not match {pattern[:100]!r}")


def _pattern_properties(
    validator: Validator, patterns: dict[str, Any], instance: Any, schema: Any
) -> Iterator[Any]:
    if not validator.is_type(instance, "object"):
        return
    for pattern, subschema in patterns.items():
        for key, value in instance.items():
            found = _search(pattern, key)
            if found is None:
                yield ValidationError(f"the pattern {pattern[:100]!r} took too long to check")
            elif found:
                # every jsonschema validator class has descend(); its Validator protocol omits it
                yield from validator.descend(  # type: ignore[attr-defined]
                    value, subschema, path=key, schema_path=pattern
                )


_TIMED_KEYWORDS = {"pattern": _pattern, "patternProperties": _pattern_properties}


def _json_type(value: Any) -> str:
    if isinstance(value, list):
        return "an array"
    if isinstance(value, str):
        return "a string"
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    return "a number" if isinstance(value, int | float) else type(value).__name__


def _depth(value: Any) -> int:
    """The JSON nesting depth, without recursion (the value may be hostile)."""
    deepest = 0
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        deepest = max(deepest, depth)
        if depth > MAX_SCHEMA_DEPTH:
            break
        children = (
            node.values() if isinstance(node, dict) else node if isinstance(node, list) else ()
        )
        stack.extend((child, depth + 1) for child in children if isinstance(child, dict | list))
    return deepest


def _check_references(root: Resource[Any]) -> None:
    """Every reference resolves without I/O, and none loops back without consuming input."""
    registry = METASCHEMAS.combine(NO_RETRIEVAL)
    resolver = registry.resolver_with_root(root)
    in_place: dict[int, list[int]] = {}  # id(subschema) -> subschemas applied to the same value
    stack = [(root, resolver)]
    while stack:
        resource, resolver = stack.pop()
        contents = resource.contents
        if isinstance(contents, dict):
            resolver = resolver.in_subresource(resource)
            in_place[id(contents)] = [*_references(contents, resolver), *_applied(contents)]
        stack.extend((sub, resolver) for sub in resource.subresources())
    if _has_cycle(in_place):
        raise UnusableSchema("has references that loop without end")


def _references(schema: dict[str, Any], resolver: Any) -> Iterator[int]:
    for keyword in _REF_KEYWORDS:
        ref = schema.get(keyword)
        if not isinstance(ref, str):
            continue
        try:
            target = resolver.lookup(ref).contents
        except Unresolvable:
            raise UnusableSchema(
                f"refers to {ref[:200]!r}, which is not part of the schema: turnout resolves"
                " local references only (#/$defs/...) and fetches nothing"
            ) from None
        if isinstance(target, dict):
            yield id(target)


def _applied(schema: dict[str, Any]) -> Iterator[int]:
    for keyword in _IN_PLACE_ONE:
        if isinstance(schema.get(keyword), dict):
            yield id(schema[keyword])
    for keyword in _IN_PLACE_MANY:
        options = schema.get(keyword)
        for option in options if isinstance(options, list) else ():
            if isinstance(option, dict):
                yield id(option)
    dependent = schema.get("dependentSchemas")
    for option in dependent.values() if isinstance(dependent, dict) else ():
        if isinstance(option, dict):
            yield id(option)


def _has_cycle(edges: dict[int, list[int]]) -> bool:
    """Depth-first search with colours, iteratively (the graph may be large)."""
    done: set[int] = set()
    for start in edges:
        if start in done:
            continue
        on_path = {start}
        path: list[tuple[int, Iterator[int]]] = [(start, iter(edges.get(start, ())))]
        while path:
            node, children = path[-1]
            child = next(children, None)
            if child is None:
                path.pop()
                on_path.discard(node)
                done.add(node)
            elif child in on_path:
                return True
            elif child not in done:
                on_path.add(child)
                path.append((child, iter(edges.get(child, ()))))
    return False
