"""YAML loading that remembers where every value came from.

``yaml.safe_load`` forgets line numbers, and a rule author needs ``file:line`` for every
problem. We compose the node tree, build plain Python values from it ourselves and keep a
``path -> line`` map beside them. Duplicate mapping keys are reported, not silently
overwritten as PyYAML would.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import yaml

Path = tuple[str | int, ...]


@dataclass(slots=True)
class LocatedDocument:
    """Plain data from one YAML file plus the line (1-based) of each value."""

    data: object
    lines: dict[Path, int] = field(default_factory=dict)
    duplicate_keys: list[tuple[Path, int]] = field(default_factory=list)

    def line_of(self, path: Path) -> int:
        """The line of ``path`` or of its nearest ancestor that exists."""
        for end in range(len(path), -1, -1):
            line = self.lines.get(path[:end])
            if line is not None:
                return line
        return 1


class YamlSyntaxError(ValueError):
    def __init__(self, line: int, detail: str) -> None:
        super().__init__(detail)
        self.line = line
        self.detail = detail


_constructor = yaml.constructor.SafeConstructor()


def load_located(text: str) -> LocatedDocument:
    """Parse one YAML document; raise ``YamlSyntaxError`` with a line on malformed input."""
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark is not None else 1
        raise YamlSyntaxError(line, f"{exc.problem or exc.context or 'invalid YAML'}") from None
    except yaml.YAMLError as exc:
        raise YamlSyntaxError(1, str(exc)) from None
    document = LocatedDocument(data=None)
    if node is None:
        return document
    document.data = _build(node, (), document)
    return document


def _build(node: yaml.Node, path: Path, document: LocatedDocument) -> object:
    document.lines[path] = node.start_mark.line + 1
    if isinstance(node, yaml.MappingNode):
        result: dict[str, object] = {}
        for key_node, value_node in node.value:
            key = _scalar(key_node)
            # Non-string keys (``1:``, ``true:``) are never valid in a rule; keep them as text
            # so the validator can name them instead of crashing on them.
            key_text = key if isinstance(key, str) else str(key)
            child = (*path, key_text)
            if key_text in result:
                document.duplicate_keys.append((child, key_node.start_mark.line + 1))
            result[key_text] = _build(value_node, child, document)
            # Point at the key: ``window: 10x`` and ``where:`` are reported where they are named.
            document.lines[child] = key_node.start_mark.line + 1
        return result
    if isinstance(node, yaml.SequenceNode):
        return [_build(item, (*path, index), document) for index, item in enumerate(node.value)]
    return _scalar(node)


def _scalar(node: yaml.Node) -> object:
    if not isinstance(node, yaml.ScalarNode):
        return f"<{type(node).__name__}>"
    try:
        return _constructor.construct_object(node, deep=True)
    except yaml.constructor.ConstructorError:
        return node.value
