"""Checking a job's arguments against the task's annotations at enqueue, so that
``{"contact_id": "one"}`` for ``contact_id: int`` is refused where it is made, naming the
field, instead of failing (or worse, succeeding wrongly) in a worker later.

Arguments arrive as JSON values, so the annotations checked are the JSON-shaped ones: ``int``,
``float`` (an int is a float), ``str``, ``bool``, ``None``, unions and ``Optional``,
``Literal``, lists, tuples and sequences, dicts and mappings with string keys, ``TypedDict``s,
dataclasses (a dict of their fields) and Pydantic models when Pydantic is installed (their
own validation). An annotation outside these (a class of the program's own, a ``Protocol``)
is not checked. Each parameter's check is built once, when the task is declared.
"""

from __future__ import annotations

import collections.abc
import dataclasses
import inspect
import types
import typing
from typing import Any, Callable, Mapping

#: a check: raises ``TypeError`` naming where (``path``) the value does not fit
Check = Callable[[Any, str], None]


def _describe(value: Any) -> str:
    text = repr(value)
    return f"{type(value).__name__} {text if len(text) <= 40 else text[:37] + '...'}"


def _fail(path: str, expected: str, value: Any) -> None:
    raise TypeError(f"{path} must be {expected}, got {_describe(value)}")


def _simple(kind: type, name: str) -> Check:
    def check(value: Any, path: str) -> None:
        if isinstance(value, bool) or not isinstance(value, kind):
            _fail(path, name, value)

    return check


def _check_float(value: Any, path: str) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        _fail(path, "a number", value)


def _check_bool(value: Any, path: str) -> None:
    if not isinstance(value, bool):
        _fail(path, "true or false", value)


def _check_none(value: Any, path: str) -> None:
    if value is not None:
        _fail(path, "null", value)


def _sequence(item: Check | None) -> Check:
    def check(value: Any, path: str) -> None:
        if not isinstance(value, (list, tuple)):
            _fail(path, "a list", value)
        if item is not None:
            for index, element in enumerate(value):
                item(element, f"{path}[{index}]")

    return check


def _mapping(item: Check | None) -> Check:
    def check(value: Any, path: str) -> None:
        if not isinstance(value, dict):
            _fail(path, "an object", value)
        if item is not None:
            for key, element in value.items():
                item(element, f"{path}.{key}")

    return check


def _fields(name: str, fields: dict[str, Check | None], required: set[str], closed: bool) -> Check:
    def check(value: Any, path: str) -> None:
        if not isinstance(value, dict):
            _fail(path, f"an object ({name})", value)
        missing = sorted(required - set(value))
        if missing:
            raise TypeError(f"{path} ({name}) lacks {', '.join(repr(m) for m in missing)}")
        for key, element in value.items():
            if key not in fields:
                if closed:
                    raise TypeError(f"{path} ({name}) has no field {key!r}")
                continue
            field_check = fields[key]
            if field_check is not None:
                field_check(element, f"{path}.{key}")

    return check


def _union(options: list[Check | None], names: str) -> Check | None:
    if any(option is None for option in options):
        return None  # one of the options is not checked: any value may be it

    others = [option for option in options if option is not _check_none]
    if len(others) == 1 and len(options) == 2:  # Optional[X]: X's own error says what is wrong
        only = others[0]

        def optional(value: Any, path: str) -> None:
            if value is not None:
                only(value, path)  # type: ignore[misc]

        return optional

    def check(value: Any, path: str) -> None:
        for option in options:
            try:
                option(value, path)  # type: ignore[misc]
                return
            except TypeError:
                continue
        _fail(path, names, value)

    return check


def _hints(cls: Any) -> dict[str, Any]:
    try:
        return typing.get_type_hints(cls)
    except Exception:  # a forward reference that does not resolve: those fields go unchecked
        return dict(getattr(cls, "__annotations__", {}))


def check_for(annotation: Any) -> Check | None:
    """The check of values for ``annotation``, or None when it is not checked."""
    if annotation is inspect.Parameter.empty or annotation is Any or annotation is object:
        return None
    if annotation is None or annotation is type(None):
        return _check_none
    if annotation is bool:
        return _check_bool
    if annotation is int:
        return _simple(int, "an integer")
    if annotation is float:
        return _check_float
    if annotation is str:
        return _simple(str, "a string")
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin is typing.Union or origin is types.UnionType:
        return _union([check_for(a) for a in args], " or ".join(getattr(a, "__name__", str(a)) for a in args))
    if origin is typing.Literal:
        allowed = list(args)

        def literal(value: Any, path: str) -> None:
            if value not in allowed or isinstance(value, bool) != any(isinstance(a, bool) for a in allowed):
                _fail(path, "one of " + ", ".join(repr(a) for a in allowed), value)

        return literal
    if annotation in (list, tuple) or origin in (list, tuple, collections.abc.Sequence, collections.abc.Iterable):
        # list[T], Sequence[T] and tuple[T, ...] check each item; a fixed tuple only its shape
        uniform = len(args) == 1 or (len(args) == 2 and args[1] is Ellipsis)
        return _sequence(check_for(args[0]) if uniform else None)
    if annotation is dict or origin in (dict, collections.abc.Mapping):
        return _mapping(check_for(args[1]) if len(args) == 2 else None)
    if typing.is_typeddict(annotation):
        hints = _hints(annotation)
        required = set(getattr(annotation, "__required_keys__", hints))
        return _fields(annotation.__name__, {k: check_for(v) for k, v in hints.items()}, required, closed=True)
    if dataclasses.is_dataclass(annotation) and isinstance(annotation, type):
        hints = _hints(annotation)
        fields = {f.name: check_for(hints.get(f.name, Any)) for f in dataclasses.fields(annotation)}
        required = {
            f.name
            for f in dataclasses.fields(annotation)
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
        }
        return _fields(annotation.__name__, fields, required, closed=True)
    validate = getattr(annotation, "model_validate", None)
    if isinstance(annotation, type) and callable(validate):  # a Pydantic model: its own rules

        def model(value: Any, path: str) -> None:
            try:
                validate(value)
            except Exception as exc:  # pydantic.ValidationError lists every problem
                raise TypeError(f"{path} is not a valid {annotation.__name__}: {exc}") from None

        return model
    return None


def checks_for(fn: Callable[..., Any], signature: inspect.Signature) -> dict[str, Check]:
    """The check of each parameter of ``fn`` (as ``signature`` has them) that is checked."""
    try:
        hints = typing.get_type_hints(fn)
    except Exception:  # one annotation does not resolve: each of the others is resolved alone
        hints = {}
    checks: dict[str, Check] = {}
    for name, param in signature.parameters.items():
        if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
            continue
        annotation = hints.get(name, param.annotation)
        if isinstance(annotation, str):
            try:
                annotation = eval(annotation, getattr(fn, "__globals__", {}))  # noqa: S307 - the program's own annotation
            except Exception:
                continue  # names a class the module does not define at its top level: not checked
        check = check_for(annotation)
        if check is not None:
            checks[name] = check
    return checks


def check_values(checks: Mapping[str, Check], args: Mapping[str, Any]) -> str | None:
    """What is wrong with ``args`` (the first argument that does not fit), or None."""
    for name, check in checks.items():
        if name in args:
            try:
                check(args[name], name)
            except TypeError as exc:
                return str(exc)
    return None
