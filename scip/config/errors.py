"""The one error formatter of every scip config: run, tile (slide) and training configs.

Pydantic reports a location (``('segment', 'watershed', 'min_distanse')``)
and a type per problem. :func:`format_errors` turns them into one line each:
the key path as the user wrote it (the tags pydantic inserts for union
members are dropped), the bad value, what is allowed and a "did you mean".
A value that fits no member of a union (``input.z: maxx``) is one line
listing what each member allows, not one line per member. The model at a
location (for the allowed keys of an unknown key) is found from the root
model the config was validated with, so any config model works.
"""

from __future__ import annotations

import re
import types
import typing
from pathlib import Path
from typing import Annotated, Any, TypeVar, Union

from pydantic import BaseModel, ValidationError

from scip._hints import did_you_mean, short
from scip.yamlfile import ConfigError

__all__ = ["format_error", "format_errors", "validate", "suggest"]

M = TypeVar("M", bound=BaseModel)


def suggest(value: Any, allowed: list[str] | tuple[str, ...]) -> str:
    """``"; did you mean 'x'?"`` for the closest allowed config key or value, or ``""``.

    Config keys are short, so a looser match than :func:`scip._hints.did_you_mean`'s
    default still points at the right one.
    """
    return did_you_mean(value, allowed, cutoff=0.5)


def validate(root: type[M], raw: dict, *, origin: str, base: Path, what: str = "configuration") -> M:
    """``raw`` validated into ``root``, or a :class:`ConfigError` listing every problem.

    Parameters
    ----------
    root : type of BaseModel
        The config model (``Config``, ``TrainConfig``, ...).
    raw : dict
        The parsed file with overrides applied (:func:`scip.config.read_config_file`).
    origin : str
        The file name (or ``"config"`` for a mapping), for the message.
    base : Path
        Folder relative paths resolve against (the validators' ``base_dir`` context).
    what : str
        The kind of config in the message: ``"invalid {what} in {origin}"``.

    Raises
    ------
    ConfigError
        One line per problem: key path, bad value, allowed values, "did you mean".
    """
    try:
        return root.model_validate(raw, context={"base_dir": base})
    except ValidationError as e:
        lines = format_errors(e.errors(), root)
        raise ConfigError(f"invalid {what} in {origin}:\n" + "\n".join(f"  - {line}" for line in lines)) from None


def format_errors(errors: list[dict], root: type[BaseModel]) -> list[str]:
    """One line per problem of a pydantic ``ValidationError.errors()`` list, against ``root``.

    The errors of one value that fits no member of a union become one line,
    unless the value is a mapping or list that one member takes apart: then
    that member's own errors are reported (the member with the fewest).
    """
    return list(dict.fromkeys(_lines([(err, _walk(root, tuple(err["loc"]))) for err in errors], 0)))


def _lines(walked: list[tuple[dict, _Walk]], level: int) -> list[str]:
    """The lines of these errors, those below the same ``level``-th plain union grouped (in first-seen order)."""
    order: list[str | tuple] = []
    unions: dict[tuple, list] = {}
    for err, w in walked:
        if len(w.unions) <= level:
            order.append(_line(err, w))
            continue
        key = tuple(w.parts[:w.unions[level][0]])
        if key not in unions:
            order.append(key)  # the union's line(s) go where its first error was
            unions[key] = []
        unions[key].append((err, w))
    out: list[str] = []
    for item in order:
        out.extend([item] if isinstance(item, str) else _union_lines(item, unions[item], level))
    return out


def format_error(err: dict, root: type[BaseModel]) -> str:
    """One line for one pydantic error: key path, bad value, what is allowed."""
    return format_errors([err], root)[0]


class _Walk:
    """Where an error's location leads: the user's key path, the model holding the last key, union branches."""

    def __init__(self) -> None:
        self.parts: list[Any] = []  # the key path, union tags left out
        self.model: type[BaseModel] | None = None  # the model holding the last key
        self.unions: list[tuple[int, str]] = []  # each plain (not tagged) union: where in parts, the member's tag
        self.field: Any = None  # annotation of the last part


def _walk(root: type[BaseModel], loc: tuple) -> _Walk:
    w = _Walk()
    annotation: Any = root
    i = 0
    while i < len(loc):
        part = loc[i]
        members, discriminator = _union(annotation)
        if members:
            # Pydantic inserts a tag naming the member that failed: a discriminator value or the member's type.
            member = _member(members, discriminator, part, loc[i + 1] if i + 1 < len(loc) else None)
            if discriminator is None:
                w.unions.append((len(w.parts), str(part)))
            annotation = member
            i += 1
            continue
        base = _unwrap(annotation)
        origin = typing.get_origin(base)
        w.parts.append(part)
        if isinstance(base, type) and issubclass(base, BaseModel):
            w.model = base
            field = base.model_fields.get(str(part))
            annotation = field.annotation if field is not None else None
            if field is not None and field.discriminator and typing.get_origin(annotation) is not Annotated:
                annotation = Annotated[annotation, field]
        elif origin in (list, tuple, set, frozenset):
            args = typing.get_args(base)
            annotation = args[0] if origin is not tuple else (args[part] if isinstance(part, int) and part < len(args)
                                                                  and args[-1] is not Ellipsis else args[0])
            w.model = None
        elif origin is dict:
            annotation = typing.get_args(base)[1]
            w.model = None
        else:
            annotation, w.model = None, None
        i += 1
    w.field = annotation
    return w


def _unwrap(annotation: Any) -> Any:
    """``annotation`` without ``Annotated`` and without ``None`` as a member of a union."""
    while typing.get_origin(annotation) is Annotated:
        annotation = typing.get_args(annotation)[0]
    if typing.get_origin(annotation) in (Union, types.UnionType):
        rest = [a for a in typing.get_args(annotation) if a is not type(None)]
        if len(rest) == 1:
            return _unwrap(rest[0])
    return annotation


def _union(annotation: Any) -> tuple[list, str | None]:
    """The members of a union of two or more types (``[]`` for anything else), and its discriminator."""
    discriminator = None
    while typing.get_origin(annotation) is Annotated:
        for meta in typing.get_args(annotation)[1:]:
            discriminator = discriminator or getattr(meta, "discriminator", None)
        annotation = typing.get_args(annotation)[0]
    if typing.get_origin(annotation) not in (Union, types.UnionType):
        return [], None
    members = [a for a in typing.get_args(annotation) if a is not type(None)]
    if len(members) == 1:
        return _union(members[0])
    return members, discriminator if isinstance(discriminator, str) else None


def _member(members: list, discriminator: str | None, tag: Any, following: Any) -> Any:
    """The union member pydantic's ``tag`` names; for a scalar member, whatever (its error ends the location)."""
    models = [m for m in map(_unwrap, members) if isinstance(m, type) and issubclass(m, BaseModel)]
    if discriminator is not None:
        for m in models:
            field = m.model_fields.get(discriminator)
            if field is not None and tag in typing.get_args(_unwrap(field.annotation)):
                return m
    for m in models:
        if m.__name__ == tag:
            return m
    # A list member's tag is its type (``list[union[str,int]]``); an index follows it.
    if isinstance(following, int):
        return next((m for m in members if typing.get_origin(_unwrap(m)) in (list, tuple)), None)
    # A scalar member's tag is its type (``int``, ``constrained-int``): its constraints describe what it takes.
    scalar = str(tag).removeprefix("constrained-")
    return next((m for m in members if getattr(_unwrap(m), "__name__", None) == scalar), None)


def _key(parts: list) -> str:
    return ".".join(str(p) for p in parts)


def _line(err: dict, w: _Walk) -> str:
    """The line of one error that is not a union member's."""
    key, kind, value = _key(w.parts), err["type"], err.get("input")
    ctx = err.get("ctx") or {}
    if kind == "extra_forbidden":
        allowed = sorted(w.model.model_fields) if w.model is not None else []
        return (f"{key}: unknown key '{w.parts[-1]}'" + (f"; allowed keys: {', '.join(allowed)}" if allowed else "")
                + suggest(w.parts[-1], allowed))
    if kind == "missing":
        return f"{key}: required key is missing"
    if kind == "literal_error":
        allowed = _literal_values(ctx.get("expected", ""))
        return f"{key}: {short(value)} is not allowed; allowed values: {', '.join(allowed)}" + suggest(value, allowed)
    if kind == "union_tag_invalid":
        allowed = re.findall(r"'([^']*)'", ctx.get("expected_tags", ""))
        field = ctx.get("discriminator", "").strip("'")
        tag = ctx.get("tag", "")
        return (f"{_key([*w.parts, field])}: {short(tag)} is not a known {field}; allowed values: {', '.join(allowed)}"
                + suggest(tag, allowed))
    message = err["msg"]
    if message.startswith("Value error, "):
        message = message[len("Value error, "):]
    if not key:  # a check across sections words its own key path
        return message
    if isinstance(value, dict):  # a section's own check: the whole section is no value to show
        return f"{key}: {message}"
    return f"{key}: {message} (got {short(value)})"


def _union_lines(parts: tuple | list, group: list, level: int) -> list[str]:
    """The line(s) of one value that fits no member of the ``level``-th plain union on its path."""
    deeper: dict[str, list] = {}
    for err, w in group:
        at, tag = w.unions[level]
        if len(w.parts) > at:
            deeper.setdefault(tag, []).append((err, w))
    if deeper:
        # A mapping or list one member takes apart: that member's own problems say more than "not allowed".
        return _lines(min(deeper.values(), key=len), level + 1)
    if len(group) == 1:
        return [_line(*group[0])]
    value = group[0][0].get("input")
    allowed: list[str] = []
    described: list[str] = []
    for err, w in group:
        ctx = err.get("ctx") or {}
        if err["type"] == "literal_error":
            allowed += _literal_values(ctx.get("expected", ""))
        elif err["type"] == "value_error":
            described.append(err["msg"].removeprefix("Value error, "))
        else:
            described.append(_describe(err, w.field, w.unions[level][1]))
    options = list(dict.fromkeys([*allowed, *[d for d in described if d]]))
    listed = ", ".join(options[:-1]) + ", or " + options[-1] if len(options) > 1 else ", ".join(options)
    return [f"{_key(list(parts))}: {short(value)} is not allowed; allowed values: {listed}"
            + (suggest(value, allowed) if isinstance(value, str) else "")]


_BOUNDS = {"ge": ">=", "gt": ">", "le": "<=", "lt": "<"}


def _describe(err: dict, annotation: Any, tag: str) -> str:
    """What one union member takes, in words: its ``Field(description=...)``, or ``an integer >= 0``, ``{mad: ...}``.

    The bounds come from the member's annotation (``Annotated[int, Field(ge=0)]``),
    else from the error (pydantic gives them only when the type was right).
    """
    member = _unwrap(annotation)
    constraints: dict[str, Any] = dict(err.get("ctx") or {})
    while typing.get_origin(annotation) is Annotated:
        for meta in typing.get_args(annotation)[1:]:
            if getattr(meta, "description", None):
                return meta.description
            for item in getattr(meta, "metadata", [meta]):
                constraints.update({name: getattr(item, name) for name in _BOUNDS if hasattr(item, name)})
        annotation = typing.get_args(annotation)[0]
    if isinstance(member, type) and issubclass(member, BaseModel):
        keys = [k for k, f in member.model_fields.items() if f.is_required()] or list(member.model_fields)
        return "{" + ", ".join(f"{k}: ..." for k in keys) + "}"
    if tag.startswith(("list", "tuple")):
        what = "a list"
    elif "int" in tag:
        what = "an integer"
    elif "float" in tag or "decimal" in tag:
        what = "a number"
    elif "bool" in tag:
        what = "true or false"
    elif "str" in tag:
        what = "a text"
    else:
        what = tag
    bounds = " and ".join(f"{sign} {constraints[name]}" for name, sign in _BOUNDS.items() if name in constraints)
    return f"{what} {bounds}" if bounds else what


def _literal_values(expected: str) -> list[str]:
    """The values of pydantic's ``"'max', 'mean' or 1"`` (quoted strings, or bare numbers)."""
    return [q or n for q, n in re.findall(r"'([^']*)'|(-?\d+(?:\.\d+)?)", expected)]

