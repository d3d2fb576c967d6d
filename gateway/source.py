"""YAML text → plain Python values, with the line of every key path and `${VAR}` expanded.

Owns the file-level concerns of configuration (syntax, duplicate keys, environment); it knows
nothing of what the keys mean: `config.py` does.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import yaml

_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


@dataclass(frozen=True)
class Problem:
    line: int
    path: str
    message: str

    def render(self, filename: str) -> str:
        return f"{filename}:{self.line}: {self.path}: {self.message}"


@dataclass
class Source:
    """Plain values read from one YAML document, and where each key path stands."""

    data: Any
    lines: dict[str, int] = field(default_factory=dict)
    problems: list[Problem] = field(default_factory=list)

    def line_of(self, path: str) -> int:
        while path:
            if path in self.lines:
                return self.lines[path]
            path = _parent(path)
        return self.lines.get("", 1)

    def problem(self, path: str, message: str) -> None:
        self.problems.append(Problem(self.line_of(path), path or "(root)", message))


def _parent(path: str) -> str:
    cut = max(path.rfind("."), path.rfind("["))
    return path[:cut] if cut > 0 else ""


def child(path: str, key: str | int) -> str:
    if isinstance(key, int):
        return f"{path}[{key}]"
    return f"{path}.{key}" if path else key


def read(text: str, environ: Mapping[str, str]) -> Source:
    """Parse `text`; syntax errors become problems rather than exceptions."""
    source = Source(data=None)
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        line = mark.line + 1 if mark is not None else 1
        reason = getattr(e, "problem", None) or str(e)
        source.problems.append(Problem(line, "(root)", f"invalid YAML: {reason}"))
        return source
    if node is None:
        source.lines[""] = 1
        source.data = {}
        return source
    source.data = _plain(node, "", source, environ)
    return source


def _plain(node: yaml.Node, path: str, source: Source, environ: Mapping[str, str]) -> Any:
    source.lines.setdefault(path, node.start_mark.line + 1)
    if isinstance(node, yaml.MappingNode):
        out: dict[str, Any] = {}
        for key_node, value_node in node.value:
            key = str(key_node.value)
            key_path = child(path, key)
            if key in out:
                source.problems.append(
                    Problem(key_node.start_mark.line + 1, key_path, "duplicate key")
                )
            source.lines[key_path] = key_node.start_mark.line + 1
            out[key] = _plain(value_node, key_path, source, environ)
        return out
    if isinstance(node, yaml.SequenceNode):
        return [_plain(item, child(path, i), source, environ) for i, item in enumerate(node.value)]
    value = yaml.SafeLoader("").construct_object(node)
    if isinstance(value, str):
        return _expand(value, path, source, environ)
    return value


def _expand(value: str, path: str, source: Source, environ: Mapping[str, str]) -> str:
    def substitute(match: re.Match[str]) -> str:
        name, default = match.group(1), match.group(2)
        if name in environ:
            return environ[name]
        if default is not None:
            return default
        source.problem(path, f"environment variable {name} is not set and has no default")
        return ""

    return _VAR.sub(substitute, value)
