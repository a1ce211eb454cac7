"""YAML a user wrote, read with limits: no file, alias or nesting can exhaust the machine.

PyYAML's safe loader builds an alias (``*name``) as a second reference to one object, so a
350-byte "billion laughs" file loads at once; but everything that walks the result afterwards
(copying it for ``--set``, validating it) walks each reference again, 10^9 times. A list nested
thousands deep overflows Python's stack in the composer. So the document is checked as YAML
nodes, before any Python object is built: its size, its nesting depth, its aliases and what
they expand to, and keys written twice in one mapping (which YAML would let the second replace
silently). Every problem is one ``ConfigError`` line naming the file (and line where known).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from hptune.errors import ConfigError

MAX_BYTES = 1_000_000  # a study file is a few kilobytes; a 10,000-row table is ~500 kB
MAX_DEPTH = 40  # a study file nests 5 deep (search_space.width.when.family: value)
MAX_ALIASES = 100
MAX_ALIAS_VALUES = 100_000  # values the aliases add when expanded, beyond those written
_MERGE_TAG = "tag:yaml.org,2002:merge"


class LimitError(yaml.MarkedYAMLError):
    """A document that breaks one of the limits above, or holds a cycle."""


def _limit(problem: str, event: Any) -> LimitError:
    return LimitError(problem=problem, problem_mark=event.start_mark)


class _LimitedLoader(yaml.SafeLoader):
    """The safe loader, stopping at the nesting and alias limits, and at an alias inside the
    value it names (a cycle, which nothing after the loader could walk)."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self.depth = 0
        self.aliases = 0
        self.open_anchors: list[str | None] = []  # of the nodes being composed

    def compose_node(self, parent: Node | None, index: Any) -> Node | None:
        event = self.peek_event()
        if isinstance(event, yaml.AliasEvent):
            self.aliases += 1
            if self.aliases > MAX_ALIASES:
                raise _limit(f"more than {MAX_ALIASES} aliases, the limit of a study file", event)
            if event.anchor in self.open_anchors:
                raise _limit(f"alias *{event.anchor} is inside the value it names (a cycle)", event)
            return super().compose_node(parent, index)
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise _limit(
                f"values nested more than {MAX_DEPTH} deep, the limit of a study file", event
            )
        self.open_anchors.append(getattr(event, "anchor", None))
        try:
            return super().compose_node(parent, index)
        finally:
            self.depth -= 1
            self.open_anchors.pop()


def read_file(path: Path) -> Any:
    """Read and parse the YAML file at ``path`` within the limits.

    Raises:
        ConfigError: the file is missing, unreadable, too large, not UTF-8 text, not YAML,
            beyond a limit, or writes a key twice in one mapping (one line per problem).
    """
    try:
        with path.open("rb") as stream:
            data = stream.read(MAX_BYTES + 1)  # not more: /dev/zero or a huge file
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such study file") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the study file ({exc.strerror})") from None
    if len(data) > MAX_BYTES:
        raise ConfigError(
            f"{path}: larger than {MAX_BYTES:,} bytes; a study file is a few kilobytes "
            "(is this the right file?)"
        )
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise ConfigError(
            f"{path}:{line}: not UTF-8 text (byte 0x{data[exc.start]:02x}); "
            "save the study file as UTF-8"
        ) from None
    return parse(text, str(path))


def parse(text: str, where: str) -> Any:
    """Parse YAML ``text`` within the limits; ``where`` (the file) starts every error line.

    Raises:
        ConfigError: as ``read_file``.
    """
    try:
        loader = _LimitedLoader(text)
    except yaml.YAMLError as exc:  # the reader's check of the characters
        raise ConfigError(_one_line(exc, text, where)) from None
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        _check_expansion(node, where)
        duplicates = _duplicate_keys(node, "", set())
        if duplicates:
            raise ConfigError(f"{where}:{line}: {problem}" for line, problem in duplicates)
        return loader.construct_document(node)
    except yaml.YAMLError as exc:
        raise ConfigError(_one_line(exc, text, where)) from None
    except RecursionError:  # deeper than the limit in a key (a mapping as a key)
        raise ConfigError(f"{where}: values nested too deep") from None
    finally:
        loader.dispose()


def _one_line(exc: yaml.YAMLError, text: str, where: str) -> str:
    """A PyYAML error as one line: the file, line and column, and the problem."""
    if isinstance(exc, yaml.reader.ReaderError):  # a control character: not a text file
        line = text.count("\n", 0, exc.position) + 1
        return f"{where}:{line}: not a text file (character U+{exc.character:04X})"
    mark = getattr(exc, "problem_mark", None)
    place = f"{where}:{mark.line + 1}:{mark.column + 1}" if mark else where
    problem = " ".join(str(getattr(exc, "problem", None) or exc).split())
    if isinstance(exc, LimitError):
        return f"{place}: {problem}"
    return f"{place}: not valid YAML: {problem}"


def _check_expansion(root: Node, where: str) -> None:
    """Refuse aliases that expand to more than ``MAX_ALIAS_VALUES`` values beyond those written,
    counted on the nodes (each one once: a billion-laughs file costs microseconds)."""
    sizes: dict[int, int] = {}

    def size(node: Node) -> int:
        known = sizes.get(id(node))
        if known is None:
            children: list[Node] = []
            if isinstance(node, SequenceNode):
                children = node.value
            elif isinstance(node, MappingNode):
                children = [part for pair in node.value for part in pair]
            known = sizes[id(node)] = 1 + sum(size(child) for child in children)
        return known

    added = size(root) - len(sizes)
    if added > MAX_ALIAS_VALUES:
        raise ConfigError(
            f"{where}: its aliases (*name) expand to {added:,} more values, more than the "
            f"{MAX_ALIAS_VALUES:,} a study file may add so"
        )


def _duplicate_keys(node: Node, path: str, seen: set[int]) -> list[tuple[int, str]]:
    """(line, problem) for each key written twice in one mapping, with its key path."""
    if id(node) in seen:
        return []
    seen.add(id(node))
    problems: list[tuple[int, str]] = []
    if isinstance(node, SequenceNode):
        for index, child in enumerate(node.value):
            problems += _duplicate_keys(child, f"{path}[{index}]", seen)
    elif isinstance(node, MappingNode):
        first: dict[tuple[str, str], int] = {}  # (tag, key as written) -> its line
        for key, value in node.value:
            label = path
            if isinstance(key, ScalarNode) and key.tag != _MERGE_TAG:  # `<<: *base` may repeat
                label = f"{path}.{key.value}" if path else key.value
                line = key.start_mark.line + 1
                if (key.tag, key.value) in first:
                    earlier = first[(key.tag, key.value)]
                    where = (
                        f"on line {line}" if earlier == line else f"on lines {earlier} and {line}"
                    )
                    problems.append(
                        (
                            line,
                            f"{label}: written twice, {where}; the second would replace the "
                            "first: keep one",
                        )
                    )
                else:
                    first[(key.tag, key.value)] = line
            problems += _duplicate_keys(value, label, seen)
    return problems
