"""What the policy decides on: views of events and elements, holdings, peers, sharing groups.

Plain frozen data, built from the model's bodies (see `event_view`). Policy functions never do I/O:
they receive these and return decisions.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Mapping, NamedTuple


from fedmisp.model.misp import KIND_ATTRIBUTE, KIND_OBJECT, KIND_REFERENCE, KIND_REPORT  # element kinds, defined once

# --- distribution levels (MISP's numbers) ------------------------------------------------------
ORG_ONLY = 0  # your organisation only
COMMUNITY = 1  # this community only: the origin's direct peers
CONNECTED = 2  # connected communities: up to two hops
ALL = 3  # all communities
SHARING_GROUP = 4
INHERIT = 5  # as the containing object or event



class PeerMode(str, Enum):
    FULL = "full"  # this node serves the peer and pulls from it
    PUSH_ONLY = "push-only"  # this node serves the peer; it takes nothing from it
    PULL_ONLY = "pull-only"  # this node pulls from the peer; it serves it nothing
    CORRELATION_ONLY = "correlation-only"  # what the peer sends feeds correlation only: never shown or relayed
    INTERNAL = "internal"  # the same organisation's other node: no downgrade, level 0 and local tags pass


class ElementView(NamedTuple):
    """One element as the policy sees it. A named tuple rather than a frozen dataclass: one is
    built for every element a node sends or receives, and a frozen dataclass's __init__ (a
    guarded setattr per field) cost about 4x as much (a fifth of a bulk pull's policy time)."""
    uuid: str
    kind: str  # attribute, object, reference or report
    distribution: int  # as its author signed it, 0-5 (references carry none: 5)
    sharing_group: str | None = None
    object_uuid: str | None = None  # attributes and references inside an object
    type: str | None = None  # attributes
    template: str | None = None  # objects: template name
    template_uuid: str | None = None
    tags: frozenset[str] = frozenset()  # lower-cased tag names
    to_ids: bool = False


@dataclass(frozen=True, slots=True)
class EventView:
    uuid: str
    orgc_uuid: str
    orgc_name: str
    distribution: int  # 0-4
    sharing_group: str | None
    published: bool
    timestamp: int
    tags: frozenset[str] = frozenset()
    elements: tuple[ElementView, ...] = ()


@dataclass(frozen=True, slots=True)
class Holding:
    """How a node holds one event: the level of the header and of each element, where from."""
    levels: Mapping[str, int]  # event uuid and element uuids -> level held at (0-4)
    # uuid -> the peers that gave it at the level held (they hold it at that level or higher)
    sources: Mapping[str, frozenset[str]] = field(default_factory=dict)
    correlation_only: bool = False  # the event came only from correlation-only peers: never shown
    # items that came over correlation-only links at a higher level than any other path gave (or
    # only there): matched at that level, never shown or relayed at it
    correlation_levels: Mapping[str, int] = field(default_factory=dict)

    def held_level(self, uuid: str) -> int | None:
        """The best level the item is held at for any purpose (relaying uses `levels` only)."""
        both = [x for x in (self.levels.get(uuid), self.correlation_levels.get(uuid)) if x is not None]
        return max(both) if both else None

    def level(self, uuid: str) -> int | None:
        return self.levels.get(uuid)


@dataclass(frozen=True, slots=True)
class SharingGroup:
    """One revision of a sharing group, as its owner (or an extend member) signed it."""
    uuid: str
    name: str
    owner: str  # org uuid
    revision: int
    members: Mapping[str, bool]  # org uuid -> extend (may add members)
    releasability: str = ""
    description: str = ""
    deleted: bool = False  # the owner deleted it: only the owner is left a member

    def is_member(self, org_uuid: str) -> bool:
        return org_uuid in self.members


TLP_ORDER = {"tlp:clear": 0, "tlp:white": 0, "tlp:green": 1, "tlp:amber": 2, "tlp:amber+strict": 3, "tlp:red": 4}
PAP_ORDER = {"pap:clear": 0, "pap:white": 0, "pap:green": 1, "pap:amber": 2, "pap:red": 3}


@dataclass(frozen=True, slots=True)
class SyncFilter:
    """A push or pull filter for one peer (MISP's server push/pull rules, plus ceilings)."""
    tags_include: tuple[str, ...] = ()  # OR: the event must carry one of these
    tags_exclude: tuple[str, ...] = ()  # NOT: an event carrying one is refused, an element withheld
    orgs_include: tuple[str, ...] = ()  # Orgc uuid or name, OR
    orgs_exclude: tuple[str, ...] = ()
    types_exclude: tuple[str, ...] = ()  # attribute types withheld
    templates_exclude: tuple[str, ...] = ()  # object template names or uuids withheld
    tlp_ceiling: str | None = None  # highest TLP that passes (None: no ceiling)
    pap_ceiling: str | None = None
    to_ids_only: bool = False
    max_distribution: int = SHARING_GROUP  # the peer holds nothing above this level (0-3 cap; 4 lets groups pass)
    not_before: int = 0  # events last changed before this timestamp do not pass

    @classmethod
    def push_default(cls) -> "SyncFilter":
        # tlp:red never leaves a node unless the operator allows it for that peer.
        return cls(tlp_ceiling="tlp:amber+strict")


@dataclass(frozen=True, slots=True)
class PeerPolicy:
    name: str
    org_uuid: str
    mode: PeerMode = PeerMode.FULL
    push: SyncFilter = field(default_factory=SyncFilter.push_default)
    pull: SyncFilter = field(default_factory=SyncFilter)


@dataclass(frozen=True, slots=True)
class NodeState:
    """What a node knows that decisions depend on, other than the event itself."""
    org_uuid: str
    sharing_groups: Mapping[str, SharingGroup] = field(default_factory=dict)  # current revision by uuid
    blocked_events: frozenset[str] = frozenset()
    blocked_orgs: frozenset[str] = frozenset()


_NO_TAGS: frozenset[str] = frozenset()


def element_view_fields(body: dict[str, Any]) -> list[Any]:
    """The policy's view of one element body (model/misp.py) as plain fields, in ElementView's
    order with the tags as a sorted list: what the store keeps beside a revision (`views_of`).
    The one place that says how an element body reads as a view; `element_view` builds on it."""
    get = body.get
    tags = get("Tag")
    names = sorted({t["name"].lower() for t in tags}) if tags else []
    # (uuid, kind, distribution, sharing_group, object_uuid, type, template, template_uuid, tags, to_ids)
    if "type" in body and "value" in body:
        return [body["uuid"], KIND_ATTRIBUTE, get("distribution", INHERIT), get("sharing_group_uuid"),
                get("object_uuid"), body["type"], None, None, names, bool(get("to_ids", False))]
    if "content" in body:  # an event report: no type, tags or template; its own level and group
        return [body["uuid"], KIND_REPORT, get("distribution", INHERIT), get("sharing_group_uuid"),
                None, None, None, None, names, False]
    if "relationship_type" in body:
        return [body["uuid"], KIND_REFERENCE, get("distribution", INHERIT), get("sharing_group_uuid"),
                get("object_uuid"), None, None, None, names, bool(get("to_ids", False))]
    return [body["uuid"], KIND_OBJECT, get("distribution", INHERIT), get("sharing_group_uuid"),
            get("object_uuid"), None, get("name"), get("template_uuid"), names, bool(get("to_ids", False))]


def view_from_fields(fields: list[Any] | tuple[Any, ...]) -> ElementView:
    """The ElementView of `element_view_fields` (positional, one shared empty tag set: built for
    every element a node sends or receives)."""
    return ElementView(*fields[:8], frozenset(fields[8]) if fields[8] else _NO_TAGS, fields[9])


def element_view(body: dict[str, Any]) -> ElementView:
    """The policy's view of one element body."""
    return view_from_fields(element_view_fields(body))


def event_view(header: dict[str, Any], elements: list[dict[str, Any]]) -> EventView:
    """The policy's view of an event from its signed header and element bodies (model/misp.py)."""
    return header_view(header, [element_view(body) for body in elements])


def header_view(header: dict[str, Any], elements: list[ElementView]) -> EventView:
    """The policy's view of an event from its signed header and its elements' views."""
    return EventView(
        uuid=header["uuid"], orgc_uuid=header["Orgc"]["uuid"], orgc_name=header["Orgc"]["name"],
        distribution=header["distribution"], sharing_group=header.get("sharing_group_uuid"),
        published=bool(header.get("published")), timestamp=header["timestamp"],
        tags=frozenset(t["name"].lower() for t in header.get("Tag", ())), elements=tuple(elements),
    )
