"""Protobuf text format (Triton's config.pbtxt) to and from plain Python values.

Only the serving clients import tritonclient (which holds Triton's compiled config schema),
and only when they run, so this is a schema-free reader/writer for the text format: messages are dicts, repeated fields
lists, enum values `Enum` strings. The serving tests check every config it writes against the
real schema with tritonclient's `model_config_pb2`.
"""

from __future__ import annotations

import ast
import json
import re
from typing import Any


class Enum(str):
    """An enum value (written without quotes, e.g. TYPE_UINT8, KIND_CPU)."""


_TOKEN = re.compile(r"""
    \s+ | \#[^\n]* |
    (?P<string>"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*') |
    (?P<number>[-+]?(?:\d+\.\d*|\.\d+|\d+)(?:[eE][-+]?\d+)?) |
    (?P<ident>[A-Za-z_][A-Za-z0-9_.]*) |
    (?P<punct>[{}\[\]:,;<>])
""", re.VERBOSE)


def _tokens(text: str) -> list[tuple[str, str]]:
    out, pos = [], 0
    while pos < len(text):
        match = _TOKEN.match(text, pos)
        if not match:
            raise ValueError(f"config.pbtxt: unexpected character {text[pos]!r} at offset {pos}")
        pos = match.end()
        if match.lastgroup:
            out.append((match.lastgroup, match.group(match.lastgroup)))
    return out


class _Parser:
    def __init__(self, text: str) -> None:
        self.tokens = _tokens(text)
        self.i = 0

    def peek(self) -> tuple[str, str] | None:
        return self.tokens[self.i] if self.i < len(self.tokens) else None

    def take(self, expect: str | None = None) -> tuple[str, str]:
        token = self.peek()
        if token is None or (expect is not None and token[1] != expect):
            raise ValueError(f"config.pbtxt: expected {expect or 'a token'}, got {token}")
        self.i += 1
        return token

    def message(self, closing: str | None) -> dict[str, Any]:
        fields: dict[str, Any] = {}
        while (token := self.peek()) is not None and token[1] != closing:
            kind, key = self.take()
            if kind != "ident":
                raise ValueError(f"config.pbtxt: expected a field name, got {key!r}")
            if self.peek() and self.peek()[1] == ":":
                self.take(":")
            value = self.value()
            if key in fields:  # a repeated field written once per element
                previous = fields[key] if isinstance(fields[key], list) else [fields[key]]
                fields[key] = previous + (value if isinstance(value, list) else [value])
            else:
                fields[key] = value
            if self.peek() and self.peek()[1] in (",", ";"):
                self.take()
        if closing is not None:
            self.take(closing)
        return fields

    def value(self) -> Any:
        kind, text = self.take()
        if text in ("{", "<"):
            return self.message("}" if text == "{" else ">")
        if text == "[":
            items = []
            while self.peek() and self.peek()[1] != "]":
                items.append(self.value())
                if self.peek() and self.peek()[1] == ",":
                    self.take(",")
            self.take("]")
            return items
        if kind == "string":
            return ast.literal_eval(text)
        if kind == "number":
            return float(text) if any(c in text for c in ".eE") else int(text)
        if kind == "ident":
            return {"true": True, "false": False}.get(text, Enum(text))
        raise ValueError(f"config.pbtxt: unexpected {text!r}")


def loads(text: str) -> dict[str, Any]:
    return _Parser(text).message(None)


def _scalar(value: Any) -> str:
    if isinstance(value, Enum):
        return str(value)
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)
    raise TypeError(f"cannot write {value!r} to config.pbtxt")


def dumps(fields: dict[str, Any], indent: int = 0) -> str:
    pad = "  " * indent
    lines = []
    for key, value in fields.items():
        if isinstance(value, dict):
            lines += [f"{pad}{key} {{", dumps(value, indent + 1).rstrip("\n"), f"{pad}}}"]
        elif isinstance(value, list) and any(isinstance(v, dict) for v in value):
            lines.append(f"{pad}{key} [")
            for n, item in enumerate(value):
                comma = "," if n < len(value) - 1 else ""
                lines += [f"{pad}  {{", dumps(item, indent + 2).rstrip("\n"), f"{pad}  }}{comma}"]
            lines.append(f"{pad}]")
        elif isinstance(value, list):
            lines.append(f"{pad}{key}: [ {', '.join(_scalar(v) for v in value)} ]")
        else:
            lines.append(f"{pad}{key}: {_scalar(value)}")
    return "\n".join(line for line in lines if line) + "\n"
