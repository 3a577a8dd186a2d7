"""YAML loading that remembers where every value came from.

Config errors must point at `FILE:LINE:COL`, so we compose the node graph ourselves
and record the mark of each value (and of each mapping key) by its path.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import yaml

Path = tuple[str | int, ...]


@dataclass
class Source:
    file: str
    data: Any = None
    marks: dict[Path, tuple[int, int]] = field(default_factory=dict)
    key_marks: dict[Path, tuple[int, int]] = field(default_factory=dict)

    def where(self, path: Path, key: bool = False) -> str:
        """Best location for `path`: the exact node, else its nearest parent."""
        table = self.key_marks if key else self.marks
        p = tuple(path)
        while p not in table and p:
            if not key and p in self.key_marks:
                table = self.key_marks
                break
            p = p[:-1]
        line, col = table.get(p, self.marks.get((), (1, 1)))
        return f"{self.file}:{line}:{col}"


_CONSTRUCTOR = yaml.SafeLoader("")


class YamlError(Exception):
    """A document that is not YAML at all; str() is already `FILE:LINE:COL: msg`."""


def load(text: str, file: str) -> Source:
    src = Source(file)
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        src.marks[()] = (1, 1)
        src.data = {} if node is None else _build(node, (), src)  # may construct tags: errors too
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        line, col = (mark.line + 1, mark.column + 1) if mark else (1, 1)
        raise YamlError(f"{file}:{line}:{col}: invalid YAML: {e.problem or e.context}") from None
    except yaml.YAMLError as e:
        raise YamlError(f"{file}:1:1: invalid YAML: {first_line(str(e))}") from None
    except RecursionError:  # deep nesting, or an alias that contains itself
        raise YamlError(f"{file}:1:1: invalid YAML: nested too deeply (or a recursive alias)") from None
    finally:
        # the constructor caches every node it built (with their marks): at 10,000 watches
        # that kept 128 MiB of the node graph alive for the daemon's life
        _CONSTRUCTOR.constructed_objects.clear()
        _CONSTRUCTOR.recursive_objects.clear()
    return src


def first_line(text: str) -> str:
    return text.strip().splitlines()[0] if text.strip() else text


def _build(node: yaml.Node, path: Path, src: Source) -> Any:
    src.marks[path] = (node.start_mark.line + 1, node.start_mark.column + 1)
    if isinstance(node, yaml.MappingNode):
        out: dict[Any, Any] = {}
        for knode, vnode in node.value:
            key = _scalar(knode, src.file)
            if not isinstance(key, (str, int)) or isinstance(key, bool):
                key = str(key)
            if key in out:
                line, col = knode.start_mark.line + 1, knode.start_mark.column + 1
                raise YamlError(f"{src.file}:{line}:{col}: duplicate key {key!r}")
            src.key_marks[path + (key,)] = (knode.start_mark.line + 1, knode.start_mark.column + 1)
            out[key] = _build(vnode, path + (key,), src)
        return out
    if isinstance(node, yaml.SequenceNode):
        return [_build(v, path + (i,), src) for i, v in enumerate(node.value)]
    return _scalar(node, src.file)


def _scalar(node: yaml.Node, file: str) -> Any:
    if not isinstance(node, yaml.ScalarNode):
        line, col = node.start_mark.line + 1, node.start_mark.column + 1
        raise YamlError(f"{file}:{line}:{col}: a key must be a plain value")
    try:
        return _CONSTRUCTOR.construct_object(node, deep=True)
    except yaml.YAMLError:
        raise
    except Exception as e:  # noqa: BLE001 - PyYAML's constructors: `!!int x`, `!!timestamp x`...
        line, col = node.start_mark.line + 1, node.start_mark.column + 1
        raise YamlError(f"{file}:{line}:{col}: invalid YAML: bad {node.tag.rsplit(':', 1)[-1]} value "
                        f"{node.value!r}: {first_line(str(e))}") from None
