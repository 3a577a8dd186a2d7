"""YAML loading that remembers where every value came from.

Config errors must point at `FILE:LINE:COL`, so we build the values from PyYAML's
event stream ourselves and record the mark of each value (and of each mapping key) by
its path.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any, Iterator

import yaml

Path = tuple[str | int, ...]


@dataclass
class Source:
    """The values of a YAML file, and where each came from. The locations are only
    needed for an error, so they are found then, by reading the text again: at 10,000
    watches a table of every node's position held 40 MiB for the life of the daemon."""

    file: str
    data: Any = None
    text: str = ""
    _marks: tuple[dict[Path, tuple[int, int]], dict[Path, tuple[int, int]]] | None = None

    def where(self, path: Path, key: bool = False) -> str:
        """Best location for `path`: the exact node, else its nearest parent."""
        if self._marks is None:
            self._marks = ({(): (1, 1)}, {})
            if self.text:
                _parse(self.text, self.file, self._marks)
        marks, key_marks = self._marks
        table = key_marks if key else marks
        p = tuple(path)
        while p not in table and p:
            if not key and p in key_marks:
                table = key_marks
                break
            p = p[:-1]
        line, col = table.get(p, marks.get((), (1, 1)))
        return f"{self.file}:{line}:{col}"


_CONSTRUCTOR = yaml.SafeLoader("")
_RESOLVER = yaml.resolver.Resolver()
_PARSER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml when present: 5x faster at 10,000 watches


MAX_VALUES = 2_000_000  # values in one document, aliases expanded (a 10,000-watch config: ~200,000)


class YamlError(Exception):
    """A document that is not YAML at all; str() is already `FILE:LINE:COL: msg`."""


def load(text: str, file: str) -> Source:
    """Built from the event stream, not a composed node graph: the graph of a 10,000-watch
    file (every node with two marks) peaked at 180 MiB, and the heap kept that size."""
    return Source(file, _parse(text, file, None), text)


def _parse(text: str, file: str, marks: tuple[dict[Path, tuple[int, int]], dict[Path, tuple[int, int]]] | None) -> Any:
    try:
        events = yaml.parse(text, Loader=_PARSER)
        next(events)  # StreamStart
        ev = next(events)
        if isinstance(ev, yaml.StreamEndEvent):
            return {}
        data = _Builder(events, file, marks).value(next(events), ())
        next(events)  # DocumentEnd
        ev = next(events)
        if not isinstance(ev, yaml.StreamEndEvent):
            raise YamlError(f"{_where(file, ev)}: invalid YAML: expected a single document in the stream")
        return data
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        line, col = (mark.line + 1, mark.column + 1) if mark else (1, 1)
        raise YamlError(f"{file}:{line}:{col}: invalid YAML: {e.problem or e.context}") from None
    except yaml.YAMLError as e:
        raise YamlError(f"{file}:1:1: invalid YAML: {first_line(str(e))}") from None
    except RecursionError:  # deep nesting
        raise YamlError(f"{file}:1:1: invalid YAML: nested too deeply (or a recursive alias)") from None
    finally:
        _CONSTRUCTOR.constructed_objects.clear()  # it caches every node it built, marks and all
        _CONSTRUCTOR.recursive_objects.clear()


def first_line(text: str) -> str:
    return text.strip().splitlines()[0] if text.strip() else text


def _where(file: str, ev: yaml.Event) -> str:
    return f"{file}:{ev.start_mark.line + 1}:{ev.start_mark.column + 1}"


class _Builder:
    def __init__(self, events: Iterator[yaml.Event], file: str,
                 marks: tuple[dict[Path, tuple[int, int]], dict[Path, tuple[int, int]]] | None):
        self.events, self.file = events, file
        self.marks, self.key_marks = marks or (None, None)
        self.anchors: dict[str, Any] = {}
        # Values built so far, an alias counting as many as its anchor holds (each alias is
        # a deep copy): bounded, so a few hundred bytes of nested aliases (a "billion
        # laughs") is an error and not gigabytes.
        self.built = 0
        self.sizes: dict[str, int] = {}
        # equal strings held once: a 10,000-watch file repeats its keys ("port", "path") and
        # names ("http") in every watch, and the config is pickled to the daemon (forked.py),
        # which keeps one object where the file had one per occurrence (2.6 MiB). Not ints
        # or floats: pickle writes each by value
        self.strings: dict[str, str] = {}

    def value(self, ev: yaml.Event, path: Path) -> Any:
        if self.marks is not None:
            self.marks[path] = (ev.start_mark.line + 1, ev.start_mark.column + 1)
        if isinstance(ev, yaml.AliasEvent):
            if ev.anchor not in self.anchors:  # undefined, or an alias inside its own anchor
                raise YamlError(f"{_where(self.file, ev)}: invalid YAML: found undefined alias {ev.anchor!r} "
                                "(or a recursive alias)")
            self.built += self.sizes.get(ev.anchor, 1)
            if self.built > MAX_VALUES:
                raise YamlError(f"{_where(self.file, ev)}: invalid YAML: aliases expand to more than "
                                f"{MAX_VALUES:,} values; refusing (nested aliases?)")
            return copy.deepcopy(self.anchors[ev.anchor])
        before = self.built
        if isinstance(ev, yaml.MappingStartEvent):
            out: dict[Any, Any] = {}
            while not isinstance(kev := next(self.events), yaml.MappingEndEvent):
                key = self.key(kev)
                if not isinstance(key, (str, int)) or isinstance(key, bool):
                    key = str(key)
                if key in out:
                    raise YamlError(f"{_where(self.file, kev)}: duplicate key {key!r}")
                if self.key_marks is not None:
                    self.key_marks[path + (key,)] = (kev.start_mark.line + 1, kev.start_mark.column + 1)
                out[key] = self.value(next(self.events), path + (key,))
        elif isinstance(ev, yaml.SequenceStartEvent):
            out = []  # type: ignore[assignment]
            while not isinstance(iev := next(self.events), yaml.SequenceEndEvent):
                out.append(self.value(iev, path + (len(out),)))  # type: ignore[attr-defined]
        else:
            out = self.scalar(ev)
        self.built += 1
        if getattr(ev, "anchor", None):
            self.anchors[ev.anchor] = out
            self.sizes[ev.anchor] = self.built - before
        return out

    def key(self, ev: yaml.Event) -> Any:
        if isinstance(ev, yaml.AliasEvent) and isinstance(self.anchors.get(ev.anchor), (str, int, float)):
            return self.anchors[ev.anchor]
        if not isinstance(ev, yaml.ScalarEvent):
            raise YamlError(f"{_where(self.file, ev)}: a key must be a plain value")
        out = self.scalar(ev)
        if ev.anchor:
            self.anchors[ev.anchor] = out
        return out

    def scalar(self, ev: yaml.ScalarEvent) -> Any:
        tag = ev.tag
        if tag is None or tag == "!":
            tag = _RESOLVER.resolve(yaml.ScalarNode, ev.value, ev.implicit)
        node = yaml.ScalarNode(tag, ev.value, ev.start_mark, ev.end_mark, ev.style)
        try:
            value = _CONSTRUCTOR.construct_object(node, deep=True)
            return self.strings.setdefault(value, value) if type(value) is str else value
        except yaml.YAMLError:
            raise
        except Exception as e:  # noqa: BLE001 - PyYAML's constructors: `!!int x`, `!!timestamp x`...
            raise YamlError(f"{_where(self.file, ev)}: invalid YAML: bad {tag.rsplit(':', 1)[-1]} value "
                            f"{ev.value!r}: {first_line(str(e))}") from None
