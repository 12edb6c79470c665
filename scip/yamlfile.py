"""The strict YAML reader every scip config shares, and :class:`ConfigError`.

Kept apart from :mod:`scip.config` and free of heavy imports (no pydantic, numpy or Dask), so that a
hostile or broken config file is refused within a fraction of a second of ``scip check`` starting.
"""

from __future__ import annotations

from typing import Any

import yaml

from scip._hints import short

__all__ = ["ConfigError", "MAX_YAML_NODES", "parse_yaml"]


class ConfigError(ValueError):
    """Invalid configuration; the message is meant for the user as is."""


#: Most YAML nodes a config may hold once its aliases are expanded. Real configs have a few
#: hundred; a "billion laughs" file has 10**9 and would take minutes and gigabytes to describe.
MAX_YAML_NODES = 100_000


class _ConfigLoader(yaml.SafeLoader):
    """PyYAML's safe loader, made strict: duplicate keys and excessive alias expansion are errors."""

    origin = "config"

    def get_single_node(self) -> yaml.Node | None:
        node = super().get_single_node()
        if node is not None:
            _check_expansion(node, self.origin)
        return node

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        # Checked before the merge keys ('<<') are flattened in: overriding a merged key is intended.
        seen: dict[Any, yaml.Node] = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge" or not isinstance(key_node, yaml.ScalarNode):
                continue
            key = self.construct_object(key_node)
            if key in seen:
                raise ConfigError(
                    f"{self.origin}: key {short(key)} appears twice in one mapping, on line "
                    f"{seen[key].start_mark.line + 1} and on line {key_node.start_mark.line + 1}; "
                    "YAML would silently keep the last one: remove one of them")
            seen[key] = key_node
        return super().construct_mapping(node, deep=deep)


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.SequenceNode):
        return node.value
    if isinstance(node, yaml.MappingNode):
        return [n for pair in node.value for n in pair]
    return []


def _check_expansion(root: yaml.Node, origin: str) -> None:
    """Refuse a document whose aliases expand to more than :data:`MAX_YAML_NODES` nodes, or refer to themselves.

    An alias is the same node object as its anchor, so the expanded size is
    counted once per distinct node (memoized), in time linear in the file.
    """
    sizes: dict[int, int] = {}
    open_nodes: set[int] = set()  # nodes whose children are being counted: an alias to one is a cycle
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:
        node, counted = stack.pop()
        key = id(node)
        if counted:
            open_nodes.discard(key)
            sizes[key] = 1 + sum(sizes[id(child)] for child in _children(node))
            if sizes[key] > MAX_YAML_NODES:
                raise ConfigError(
                    f"{origin}: holds more than {MAX_YAML_NODES:,} values once its YAML aliases (*name) are "
                    f"expanded (the value on line {node.start_mark.line + 1} alone); a config never needs that "
                    "many: refused as a likely alias bomb")
            continue
        if key in sizes:
            continue
        if key in open_nodes:
            raise ConfigError(f"{origin}: the YAML value on line {node.start_mark.line + 1} contains an alias to "
                              "itself (a recursive structure); a config cannot hold one")
        open_nodes.add(key)
        stack.append((node, True))
        stack.extend((child, False) for child in _children(node) if id(child) not in sizes)


def parse_yaml(data: bytes | str, origin: str) -> Any:
    """Parse one YAML document strictly, for any scip config.

    Parameters
    ----------
    data : bytes or str
        The file's content; bytes must be UTF-8 (a byte-order mark is allowed).
    origin : str
        The file name, for messages.

    Returns
    -------
    Any
        The parsed document (``None`` for an empty file).

    Raises
    ------
    ConfigError
        Not UTF-8 (names the byte offset, line and column), not valid YAML,
        a key repeated in one mapping (names both lines), or aliases that
        expand beyond :data:`MAX_YAML_NODES` values or refer to themselves.
    """
    if isinstance(data, bytes):
        try:
            data = data.decode("utf-8-sig")
        except UnicodeDecodeError as e:
            line = data.count(b"\n", 0, e.start) + 1
            column = e.start - (data.rfind(b"\n", 0, e.start) + 1) + 1
            raise ConfigError(
                f"{origin}: not UTF-8 text: byte 0x{data[e.start]:02x} at byte offset {e.start} (line {line}, "
                f"column {column}) cannot be decoded; save the file as UTF-8") from None
    loader = _ConfigLoader(data)
    loader.origin = origin
    try:
        return loader.get_single_data()
    except yaml.YAMLError as e:
        raise ConfigError(f"{origin}: not valid YAML: {e}") from None
    except RecursionError:
        raise ConfigError(f"{origin}: YAML nested too deeply to read") from None
    finally:
        loader.dispose()
