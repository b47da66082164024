"""Reading a policy TOML document field by field, so every error names its key, rule and line.

tomllib keeps no positions, so `LineIndex` recovers the line of each key by scanning the source
text; it is a best effort (a key it cannot place reports the line of its table, or none).
"""

from __future__ import annotations

import math
import re
import tomllib
from collections.abc import Mapping, Sequence
from typing import TypeVar

from tidepool.runtime import rules

KeyPath = tuple[str | int, ...]
T = TypeVar("T")

_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")
_KEY_PART = r"(?:[A-Za-z0-9_-]+|\"[^\"]*\"|'[^']*')"
_KEY_LINE = re.compile(rf"^\s*({_KEY_PART}(?:\s*\.\s*{_KEY_PART})*)\s*=")
_HEADER = re.compile(rf"^\s*(\[\[?)\s*({_KEY_PART}(?:\s*\.\s*{_KEY_PART})*)\s*\]\]?\s*(?:#.*)?$")
_TOML_AT = re.compile(r"\s*\(at line (\d+), column (\d+)\)$")
_SHOWN_CHARS = 60


def render_key(path: KeyPath) -> str:
    """`("pools", 1, "high_watermark")` -> `pools[1].high_watermark`, quoting keys that need it."""
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
            continue
        shown = part if _BARE_KEY.fullmatch(part) else f'"{part}"'
        out += f".{shown}" if out else shown
    return out


def show(value: object) -> str:
    """A value as an error message quotes it: TOML spelling for booleans, repr otherwise."""
    if isinstance(value, bool):
        return "true" if value else "false"
    text = repr(value)
    return text if len(text) <= _SHOWN_CHARS else text[: _SHOWN_CHARS - 3] + "..."


class PolicyError(ValueError):
    """A policy that cannot be used: `key` is the dotted path, `line` where it sits (or None)."""

    def __init__(
        self, message: str, path: KeyPath = (), *, line: int | None = None, source: str = ""
    ) -> None:
        self.message = message
        self.path = path
        self.line = line
        self.source = source
        super().__init__(self._render())

    @property
    def key(self) -> str:
        return render_key(self.path)

    def _render(self) -> str:
        where = self.source
        if self.line is not None:
            where = f"{where}:{self.line}"
        parts = [part for part in (where, self.key, self.message) if part]
        return ": ".join(parts)


class LineIndex:
    """The first line of each table header and key in a TOML text, by key path."""

    def __init__(self, text: str) -> None:
        self._lines: dict[KeyPath, int] = {}
        self._array_counts: dict[KeyPath, int] = {}
        table: KeyPath = ()
        in_string = False
        for number, line in enumerate(text.splitlines(), start=1):
            if not in_string:
                table = self._scan(line, number, table)
            # A multi-line string may hold `x = y` text that is no key; skip its lines.
            if (line.count('"""') + line.count("'''")) % 2:
                in_string = not in_string

    def _scan(self, line: str, number: int, table: KeyPath) -> KeyPath:
        header = _HEADER.match(line)
        if header is not None:
            path: KeyPath = _split_key(header.group(2))
            if header.group(1) == "[[":
                index = self._array_counts.get(path, 0)
                self._array_counts[path] = index + 1
                path = (*path, index)
            self._remember(path, number)
            return path
        key = _KEY_LINE.match(line)
        if key is not None:
            self._remember((*table, *_split_key(key.group(1))), number)
        return table

    def _remember(self, path: KeyPath, number: int) -> None:
        for end in range(1, len(path) + 1):
            self._lines.setdefault(path[:end], number)

    def line(self, path: KeyPath) -> int | None:
        """The line of `path`, else of its nearest enclosing key or table, else None."""
        while path:
            if path in self._lines:
                return self._lines[path]
            path = path[:-1]
        return None


def _split_key(dotted: str) -> tuple[str, ...]:
    parts = re.findall(_KEY_PART, dotted)
    return tuple(part[1:-1] if part[:1] in "\"'" else part for part in parts)


class Where:
    """Turns a key path and a rule into a located `PolicyError` for one source text."""

    def __init__(self, source: str, text: str) -> None:
        self.source = source
        self._index = LineIndex(text)

    def error(self, path: KeyPath, message: str) -> PolicyError:
        return PolicyError(message, path, line=self._index.line(path), source=self.source)


def toml_error(source: str, error: tomllib.TOMLDecodeError) -> PolicyError:
    """A TOML syntax error, at the line tomllib names in its message."""
    text = str(error)
    at = _TOML_AT.search(text)
    if at is None:
        return PolicyError(f"invalid TOML: {text}", source=source)
    message = f"invalid TOML: {text[: at.start()]} (column {at.group(2)})"
    return PolicyError(message, line=int(at.group(1)), source=source)


class Section:
    """One TOML table being read: typed getters whose errors carry the key's path and line."""

    def __init__(self, raw: Mapping[str, object], path: KeyPath, where: Where) -> None:
        self.raw = raw
        self.path = path
        self.where = where

    def fail(self, key: str | int | KeyPath, message: str) -> PolicyError:
        tail: KeyPath = key if isinstance(key, tuple) else (key,)
        return self.where.error((*self.path, *tail), message)

    def only(self, known: Sequence[str], what: str = "key") -> None:
        """Reject the first key (in document order) not in `known`."""
        for key in self.raw:
            if key not in known:
                raise self.fail(key, f"unknown {what}; known: {', '.join(known)}")

    def _get(self, key: str, default: object) -> object:
        """The value at `key`, else `default`; a None default means the key is required."""
        if key in self.raw:
            return self.raw[key]
        if default is None:
            raise self.fail(key, "missing; this key is required")
        return default

    def number(self, key: str, default: float | None = None) -> float:
        value = self._get(key, default)
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise self.fail(key, f"must be a number, got {show(value)}")
        if not math.isfinite(value):
            raise self.fail(key, f"must be a finite number, got {show(value)}")
        return float(value)

    def integer(self, key: str, default: int | None = None) -> int:
        value = self._get(key, default)
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.fail(key, f"must be an integer, got {show(value)}")
        return value

    def boolean(self, key: str, default: bool | None = None) -> bool:
        value = self._get(key, default)
        if not isinstance(value, bool):
            raise self.fail(key, f"must be true or false, got {show(value)}")
        return value

    def string(self, key: str) -> str:
        value = self._get(key, None)
        if not isinstance(value, str):
            raise self.fail(key, f"must be a string, got {show(value)}")
        return value

    def choice(self, key: str, choices: Mapping[str, T]) -> T:
        value = self.string(key)
        if value not in choices:
            raise self.fail(key, f"must be one of {', '.join(choices)}, got {show(value)}")
        return choices[value]

    def strings(self, key: str, default: tuple[str, ...] | None = None) -> tuple[str, ...]:
        value = self._get(key, default)
        if not isinstance(value, list | tuple):
            raise self.fail(key, f"must be an array of strings, got {show(value)}")
        for index, item in enumerate(value):
            if not isinstance(item, str):
                raise self.fail((key, index), f"must be a string, got {show(item)}")
        return tuple(value)

    def table(self, key: str) -> Section | None:
        """The sub-table at `key`, or None when the key is absent."""
        value = self.raw.get(key)
        if value is None:
            return None
        if not isinstance(value, dict):
            raise self.fail(key, f"must be a table, got {show(value)}")
        return Section(value, (*self.path, key), self.where)

    def tables(self, key: str) -> list[Section]:
        """The entries of an array of tables (`[[key]]`); none when the key is absent."""
        value = self.raw.get(key, [])
        if not isinstance(value, list) or not all(isinstance(item, dict) for item in value):
            raise self.fail(key, f"must be an array of tables ([[{key}]]), got {show(value)}")
        return [Section(item, (*self.path, key, i), self.where) for i, item in enumerate(value)]


def check(ok: bool, path: str | KeyPath, message: str) -> None:
    """Raise an unlocated `PolicyError` at `path` unless `ok`; the parser places it."""
    if not ok:
        raise PolicyError(message, path if isinstance(path, tuple) else (path,))


def check_name(value: str, path: str | KeyPath) -> None:
    """Pool, alias and tenant names follow the registry's rule (they become alias names)."""
    try:
        rules.check_name(value)
    except rules.RuleError as error:
        raise PolicyError(str(error), path if isinstance(path, tuple) else (path,)) from None


def check_unique(values: Sequence[str], key: str) -> None:
    for index, value in enumerate(values):
        check(value not in values[:index], (key, index), f"repeats {value!r}")


def check_at_least(owner: object, names: Sequence[str], bound: float, strict: bool = False) -> None:
    """Each named attribute of `owner` is >= `bound` (> `bound` when `strict`)."""
    for name in names:
        value = getattr(owner, name)
        ok = value > bound if strict else value >= bound
        check(ok, name, f"must be {'>' if strict else '>='} {bound}, got {value}")
