"""Argument types checked at enqueue: each JSON-shaped annotation accepts what fits it and
refuses the rest with the field named (pure: the checks, no database)."""

from __future__ import annotations

import dataclasses
import inspect
from typing import Any, Literal, Optional, Sequence, TypedDict

import pytest

from floodway.argtypes import check_for, check_values, checks_for


class Address(TypedDict):
    city: str
    zip: int


class Partial(TypedDict, total=False):
    note: str


@dataclasses.dataclass
class Item:
    sku: str
    qty: int = 1


def problem(annotation: Any, value: Any) -> str | None:
    check = check_for(annotation)
    assert check is not None
    try:
        check(value, "x")
    except TypeError as exc:
        return str(exc)
    return None


@pytest.mark.parametrize(
    "annotation, good, bad",
    [
        (int, [0, -5, 2**40], ["one", 1.5, True, None]),
        (float, [1, 1.5], ["1.5", False]),
        (str, ["", "a"], [1, None]),
        (bool, [True, False], [0, "true"]),
        (Optional[int], [None, 3], ["3"]),
        (int | str, [1, "a"], [1.5, None]),
        (Literal["a", "b"], ["a"], ["c", 1]),
        (list[int], [[], [1, 2]], [[1, "2"], {"a": 1}, "12"]),
        (Sequence[str], [["a"]], [[1]]),
        (tuple[int, ...], [[1, 2]], [["x"]]),
        (dict[str, int], [{}, {"a": 1}], [{"a": "1"}, [1]]),
        (Address, [{"city": "Oslo", "zip": 150}], [{"city": "Oslo"}, {"city": "Oslo", "zip": "150"}]),
        (Partial, [{}, {"note": "n"}], [{"note": 1}, {"other": 1}]),
        (Item, [{"sku": "a"}, {"sku": "a", "qty": 2}], [{"qty": 2}, {"sku": "a", "qty": "2"}, {"sku": "a", "x": 1}]),
    ],
)
def test_each_annotation_accepts_what_fits_and_refuses_the_rest(annotation, good, bad):
    for value in good:
        assert problem(annotation, value) is None, value
    for value in bad:
        assert problem(annotation, value) is not None, value


def test_the_error_names_the_field_down_to_the_item():
    assert problem(list[Address], [{"city": "a", "zip": 1}, {"city": "b", "zip": "x"}]) == (
        "x[1].zip must be an integer, got str 'x'"
    )


def test_unknown_and_unannotated_arguments_are_not_checked():
    class Custom:
        pass

    def fn(a, b: Any, c: Custom, d: int, **rest: int) -> None: ...

    checks = checks_for(fn, inspect.signature(fn))
    assert set(checks) == {"d"}
    assert check_values(checks, {"a": object(), "d": 1}) is None
    assert check_values(checks, {"d": "1"}) == "d must be an integer, got str '1'"


def test_pydantic_models_validate_themselves_when_installed():
    import pydantic  # a test dependency, so this runs everywhere the suite does

    class Contact(pydantic.BaseModel):
        email: str
        age: int

    assert problem(Contact, {"email": "a@b", "age": 3}) is None
    assert "not a valid Contact" in (problem(Contact, {"email": "a@b", "age": "old"}) or "")
