"""Strict YAML: the only way etcdforge reads YAML.

Invariants:
- duplicate mapping keys are an error (PyYAML silently keeps the last one);
- only YAML 1.2-style scalars are typed: ``true``/``false`` become booleans, never ``yes``/``no``/``on``/
  ``off``/``NO`` (the "Norway problem"); ``null``/``~`` are None; plain integers and floats are numbers;
  everything else, including ``NO`` and ``01:30``, is a string;
- only plain data comes out: every explicit tag (``!!binary``, ``!!set``, ``!!timestamp``, ``!foo``,
  even ``!!str``) is refused, mapping keys must be scalars (``? [a]`` is an error, not a traceback);
- a document is bounded: at most :data:`MAX_BYTES` and :data:`MAX_ALIASES` alias uses (no
  "billion laughs" expansion).
"""

from __future__ import annotations

import re
from typing import Any

import yaml

from etcdforge.errors import SpecError

_BOOL = re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$")
_INT = re.compile(r"^[-+]?(?:0|[1-9][0-9_]*)$|^0x[0-9a-fA-F_]+$|^0o[0-7_]+$")
_FLOAT = re.compile(r"^[-+]?(?:\.[0-9]+|[0-9][0-9_]*(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?$")
_NULL = re.compile(r"^(?:~|null|Null|NULL|)$")


MAX_BYTES = 1 << 20
MAX_ALIASES = 64


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader with YAML 1.2 core scalars, duplicate-key detection, no tags, bounded aliases."""

    def __init__(self, stream: str | bytes) -> None:
        super().__init__(stream)
        self._aliases = 0

    def compose_node(self, parent: yaml.Node | None, index: Any) -> yaml.Node | None:
        event: Any = self.peek_event()  # type: ignore[no-untyped-call]
        mark: Any = event.start_mark
        if isinstance(event, yaml.AliasEvent):
            self._aliases += 1
            if self._aliases > MAX_ALIASES:
                raise yaml.composer.ComposerError(
                    None, None, f"more than {MAX_ALIASES} aliases (*name) in one document", mark
                )
        elif getattr(event, "tag", None) is not None:
            raise yaml.composer.ComposerError(
                None, None, f"tags like {event.tag} are not allowed; write plain values", mark
            )
        return super().compose_node(parent, index)


# Start from no implicit resolvers, then add the YAML 1.2 core schema only.
_StrictLoader.yaml_implicit_resolvers = {}
_StrictLoader.add_implicit_resolver("tag:yaml.org,2002:bool", _BOOL, list("tTfF"))
_StrictLoader.add_implicit_resolver("tag:yaml.org,2002:int", _INT, list("-+0123456789"))
_StrictLoader.add_implicit_resolver("tag:yaml.org,2002:float", _FLOAT, list("-+.0123456789"))
_StrictLoader.add_implicit_resolver("tag:yaml.org,2002:null", _NULL, ["~", "n", "N", ""])


def _construct_mapping(loader: _StrictLoader, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
    loader.flatten_mapping(node)
    seen: dict[Any, yaml.Node] = {}
    for key_node, _ in node.value:
        if not isinstance(key_node, yaml.ScalarNode):
            raise yaml.constructor.ConstructorError(
                None,
                None,
                "a mapping key must be a plain value, not a list or a mapping",
                key_node.start_mark,
            )
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            mark = key_node.start_mark
            raise yaml.constructor.ConstructorError(
                None,
                None,
                f"duplicate key {key!r} (first defined on line {seen[key].start_mark.line + 1})",
                mark,
            )
        seen[key] = key_node
    return loader.construct_mapping(node, deep=deep)


def _construct_bool(loader: _StrictLoader, node: yaml.ScalarNode) -> bool:
    return str(loader.construct_scalar(node)).lower() == "true"


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)
_StrictLoader.add_constructor("tag:yaml.org,2002:bool", _construct_bool)


def load_yaml(text: str | bytes, *, source: str) -> Any:
    """Parse ``text`` strictly; errors become :class:`SpecError` naming ``source`` and the line."""
    if len(text) > MAX_BYTES:
        raise SpecError(f"{source}: larger than {MAX_BYTES // 1024} KiB; this is not a cluster spec")
    try:
        return yaml.load(text, Loader=_StrictLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        where = f"{source}:{mark.line + 1}:{mark.column + 1}" if mark is not None else source
        problem = exc.problem or str(exc)
        raise SpecError(f"{where}: {problem}", hint="fix the YAML at that position") from None
    except yaml.YAMLError as exc:
        raise SpecError(f"{source}: invalid YAML: {exc}") from None


def dump_yaml(data: Any) -> str:
    """Serialize plain data as block-style YAML with keys in insertion order."""
    return yaml.safe_dump(data, sort_keys=False, default_flow_style=False, allow_unicode=True)
