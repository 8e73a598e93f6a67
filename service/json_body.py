"""A client's JSON body, parsed within limits: nesting depth, number length, text that encodes.

``json.loads`` alone recurses once per nesting level (30,000 ``[`` end in ``RecursionError``),
turns a 5,000-digit number into ``ValueError`` (Python's int digit limit) and lets lone
surrogates through that fail later when a reply is encoded. Each of these is a 400
``malformed_json`` here, before anything else reads the body.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

from service.errors import RelayError

MAX_DEPTH = 16  # the relay's bodies are flat objects
MAX_NUMBER_CHARS = 32
_STRING = re.compile(r'"(?:[^"\\]|\\.)*"', re.DOTALL)
_BRACKETS = re.compile(r"[\[\]{}]")


def malformed(detail: str) -> RelayError:
    """The refusal of a body that is not acceptable JSON."""
    return RelayError(400, "malformed_json", detail)


def parse_json_body(raw: bytes, max_depth: int = MAX_DEPTH) -> Any:
    """The value of a JSON body; :class:`RelayError` 400 ``malformed_json`` saying why not."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as error:
        raise malformed("the body is not UTF-8 text") from error
    depth = 0
    for bracket in _BRACKETS.findall(_STRING.sub("", text)):
        depth += 1 if bracket in "[{" else -1
        if depth > max_depth:
            raise malformed(f"the body nests deeper than {max_depth} levels")
    try:
        value = json.loads(text, parse_int=_integer, parse_float=_real, parse_constant=_not_json)
    except json.JSONDecodeError as error:
        raise malformed(f"the body is not JSON: {error}") from error
    _check_text(value)
    return value


def _integer(text: str) -> int:
    if len(text) > MAX_NUMBER_CHARS:
        raise malformed(f"numbers are limited to {MAX_NUMBER_CHARS} characters")
    return int(text)


def _real(text: str) -> float:
    if len(text) > MAX_NUMBER_CHARS:
        raise malformed(f"numbers are limited to {MAX_NUMBER_CHARS} characters")
    number = float(text)
    if not math.isfinite(number):
        raise malformed(f"the number {text} is out of range")
    return number


def _not_json(text: str) -> Any:
    raise malformed(f"{text} is not JSON")


def _check_text(value: Any) -> None:
    """Refuse strings (and keys) that cannot be written back as UTF-8: lone surrogates."""
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError as error:
            raise malformed("the body has a string with a lone surrogate escape") from error
    elif isinstance(value, list):
        for item in value:
            _check_text(item)
    elif isinstance(value, dict):
        for key, item in value.items():
            _check_text(key)
            _check_text(item)
