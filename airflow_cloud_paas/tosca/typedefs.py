"""The TOSCA type definitions a template can use: the normative ones plus those it imports or defines.

Names are looked up the way tosca-parser 2.12 does, so that both agree on what is known: custom
types by their exact name (``tosca:`` prefix dropped), normative ones also by short name
(``Compute`` is ``tosca.nodes.Compute``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

PREFIXES = {
    "node": "tosca.nodes.",
    "capability": "tosca.capabilities.",
    "relationship": "tosca.relationships.",
    "policy": "tosca.policies.",
    "group": "tosca.groups.",
    "data": "tosca.datatypes.",
    "interface": "tosca.interfaces.",
    "artifact": "tosca.artifacts.",
}


class UnknownParentError(LookupError):
    """A type derives from a type that is not defined."""

    def __init__(self, type_name: str, parent: str, origin: str | None) -> None:
        self.type_name = type_name
        self.parent = parent
        self.origin = origin
        super().__init__(f"type '{type_name}' derives from unknown type '{parent}'")


class TypeRegistry:
    """Look types up by name and walk their ``derived_from`` chains.

    :param builtin: the normative definitions (tosca-parser's ``EntityType.TOSCA_DEF``)
    :param custom: custom definitions by name (imports first, then the template's own)
    :param origins: custom type name -> the file defining it
    :param kinds: custom type name -> its kind (node, capability...), for short parent names
    """

    def __init__(
        self,
        builtin: Mapping[str, Any],
        custom: Mapping[str, Any],
        origins: Mapping[str, str] | None = None,
        kinds: Mapping[str, str] | None = None,
    ) -> None:
        self.builtin = builtin
        self.custom = custom
        self.origins = dict(origins or {})
        self.kinds = dict(kinds or {})

    @classmethod
    def from_sections(
        cls, builtin: Mapping[str, Any], sources: Iterable[tuple[str, Mapping[str, Any], str | None]]
    ) -> TypeRegistry:
        """Build a registry from definition files, later ones overriding earlier ones.

        :param builtin: the normative definitions
        :param sources: (file, definitions mapping, namespace prefix) in import order, template last
        """
        from airflow_cloud_paas.tosca.imports import TYPE_SECTIONS

        custom: dict[str, Any] = {}
        origins: dict[str, str] = {}
        kinds: dict[str, str] = {}
        for file, definitions, prefix in sources:
            for section in TYPE_SECTIONS:
                types = definitions.get(section)
                if not isinstance(types, Mapping):
                    continue
                for name, definition in types.items():
                    full = f"{prefix}.{name}" if prefix else str(name)
                    custom[full] = definition
                    origins[full] = file
                    kinds[full] = section[: -len("_types")]
        return cls(builtin, custom, origins, kinds)

    def resolve(self, name: Any, kind: str) -> str | None:
        """Return the canonical name of a type, or None if it is not defined.

        :param name: the type name as written
        :param kind: node, capability, relationship, policy, group, data, interface or artifact
        """
        if not isinstance(name, str) or not name:
            return None
        short = name[len("tosca:") :] if name.startswith("tosca:") else name
        if short in self.custom:
            return short
        full = short if short.startswith("tosca") else PREFIXES[kind] + short
        if full in self.builtin:
            return full
        return None

    def definition(self, name: str) -> Mapping[str, Any]:
        """Return the definition of a canonical type name ({} if it has none).

        :param name: a name returned by :meth:`resolve`
        """
        found = self.custom.get(name, self.builtin.get(name))
        return found if isinstance(found, Mapping) else {}

    def origin(self, name: str) -> str | None:
        """Return the file that defines a custom type (None for a normative type).

        :param name: a canonical type name
        """
        return self.origins.get(name)

    def hierarchy(self, name: str, kind: str) -> tuple[str, ...]:
        """Return the type and all its ancestors, most specific first.

        :param name: a canonical type name
        :param kind: the kind of type (for short parent names)
        """
        chain = [name]
        current = name
        while True:
            parent = self.definition(current).get("derived_from")
            if not parent:
                return tuple(chain)
            resolved = self.resolve(parent, kind)
            if resolved is None:
                raise UnknownParentError(current, str(parent), self.origin(current))
            if resolved in chain:  # a derived_from loop: stop rather than spin
                return tuple(chain)
            chain.append(resolved)
            current = resolved

    def derivation_cycle(self) -> tuple[str, ...] | None:
        """Return the first ``derived_from`` cycle among the custom types, or None if there is none.

        The cycle is given as the names along it, the first one repeated last (``A``, ``B``, ``A``);
        a type derived from itself (a normative type redefined that way) gives (``A``, ``A``).
        tosca-parser walks such a chain for ever, so the loader refuses it first.
        """
        done: set[str] = set()
        for start in self.custom:
            chain: list[str] = []
            position: dict[str, int] = {}
            current: str | None = start
            while current is not None and current not in done:
                if current in position:
                    return (*chain[position[current] :], current)
                position[current] = len(chain)
                chain.append(current)
                parent = self.definition(current).get("derived_from")
                current = self.resolve(parent, self.kinds.get(current, "node")) if parent else None
            done.update(chain)
        return None

    def derives_from(self, name: str, base: str, kind: str) -> bool:
        """Return whether a type is ``base`` or derives from it (False if its chain is broken).

        :param name: a canonical type name
        :param base: the canonical name of the ancestor
        :param kind: the kind of type
        """
        try:
            return base in self.hierarchy(name, kind)
        except UnknownParentError:
            return False

    def merged(self, name: str, kind: str, section: str) -> dict[str, Any]:
        """Return a mapping section (properties, capabilities...) merged down the chain.

        :param name: a canonical type name
        :param kind: the kind of type
        :param section: the section of the definitions to merge
        """
        merged: dict[str, Any] = {}
        for type_name in reversed(self.hierarchy(name, kind)):
            part = self.definition(type_name).get(section)
            if isinstance(part, Mapping):
                merged.update(part)
        return merged

    def requirement_definitions(self, name: str) -> dict[str, Any]:
        """Return a node type's requirement definitions by name, merged down the chain.

        :param name: a canonical node type name
        """
        merged: dict[str, Any] = {}
        for type_name in reversed(self.hierarchy(name, "node")):
            for item in self.definition(type_name).get("requirements") or ():
                if isinstance(item, Mapping):
                    merged.update(item)
        return merged
