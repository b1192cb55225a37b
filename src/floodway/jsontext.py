"""The JSON text floodway stores: compact, ASCII, and strict (NaN, infinities and lone UTF-16
surrogates refused).

``json.dumps`` and ``JSONEncoder.encode`` build a new C encoder on every call, which is most of
the cost of encoding the small dicts that job args and results usually are (2.5 µs of 3); a bulk
enqueue of 1,000 jobs encodes 1,000 of them. ``dumps`` builds the encoder once. It keeps no
circular-reference markers (they are per call), so a cycle ends in ``RecursionError``, which
``dumps`` reports as the ``ValueError`` that ``json`` raises for one.

A lone surrogate (``"\\ud800"``, in a key or a value) is refused (``inputs.check_encodable``):
JSON can escape it, but the value it decodes to cannot be written as UTF-8, so every later reader
(the web API, the dashboard, a terminal) would fail on it. ASCII output escapes every character
past U+FFFF as a surrogate pair, so the exact check runs only on text holding a ``\\ud`` escape.

Nesting is bounded too (``MAX_DEPTH`` levels of arrays and objects): JSON that is nested just
under what encoding allows cannot be decoded or encoded again by a reader whose stack is deeper
than the writer's (a web request's is), and would break every read of its job. Text with fewer
brackets than that in all is not scanned.
"""

from __future__ import annotations

import json
import re
from json import encoder as _encoder
from typing import Any, Callable

from .inputs import check_encodable

__all__ = ["dumps", "depth", "MAX_DEPTH"]

#: the deepest nesting of arrays and objects stored
MAX_DEPTH = 100
_STRING = re.compile(r'"(?:[^"\\]|\\.)*"')
_BRACKET = re.compile(r"[\[\]{}]")


def _refuse(value: Any) -> Any:
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")


def depth(text: str) -> int:
    """How deeply the arrays and objects of JSON ``text`` nest (0 for a scalar)."""
    level = deepest = 0
    for bracket in _BRACKET.findall(_STRING.sub("", text)):
        if bracket in "[{":
            level += 1
            deepest = max(deepest, level)
        else:
            level -= 1
    return deepest


def _checked(text: str) -> str:
    """``text`` (ASCII JSON) unless it escapes a lone surrogate or nests too deeply; then
    ``ValueError``."""
    if "\\ud" in text:
        # decoded and written again unescaped: a pair becomes its one character, a lone
        # surrogate stays itself, where check_encodable finds it (a ConfigError: a ValueError)
        check_encodable(json.dumps(json.loads(text), ensure_ascii=False, check_circular=False), "the value")
    if text.count("[") + text.count("{") > MAX_DEPTH and depth(text) > MAX_DEPTH:
        raise ValueError(f"the value is nested more than {MAX_DEPTH} levels deep")
    return text


def _build() -> Callable[[Any], str] | None:
    make = getattr(_encoder, "c_make_encoder", None)
    if make is None:  # an interpreter without the C accelerator
        return None
    try:
        encode = make(None, _refuse, _encoder.encode_basestring_ascii, None, ":", ",", False, False, False)
    except TypeError:  # a signature this module does not know
        return None

    def dumps(value: Any) -> str:
        if isinstance(value, str):
            return _checked(_encoder.encode_basestring_ascii(value))
        try:
            return _checked("".join(encode(value, 0)))
        except RecursionError:
            raise ValueError("Circular reference detected (or nesting too deep)") from None

    return dumps


_FALLBACK = json.JSONEncoder(allow_nan=False, separators=(",", ":"))
#: ``dumps(value) -> str``: TypeError for what JSON cannot hold, ValueError for NaN, a cycle or
#: a lone surrogate
dumps: Callable[[Any], str] = _build() or (lambda value: _checked(_FALLBACK.encode(value)))
