"""MISP's numeric sharing-group ids in posted events, attributes and objects.

MISP clients name a sharing group by the instance's `sharing_group_id`; fedmisp elements carry the
group's uuid (`sharing_group_uuid`). A post with distribution 4 and a `sharing_group_id` (and
neither `sharing_group_uuid` nor a `SharingGroup` object) gets the uuid of the group this node
numbers so (56-bit uuid prefix, decision 0005). No module of the API is imported here, so api.py
and its siblings can all use it.
"""
from __future__ import annotations

import uuid as _uuid
from typing import Any

from fedmisp.gossip import sharing_groups as sg
from fedmisp.policy.model import SharingGroup
from fedmisp.store.query import element_id, is_uuid
from fedmisp.store.store import Store


class UnknownSharingGroup(ValueError):
    def __init__(self, ref: Any):
        self.ref = ref
        super().__init__(f"sharing_group_id: no sharing group {ref!r} on this node (sharingGroups/index lists them)")


def find_sharing_group(groups: dict[str, SharingGroup], ref: Any) -> SharingGroup | None:
    """A live group by this node's numeric id or by uuid."""
    if isinstance(ref, bool) or not isinstance(ref, (str, int)):
        return None
    ref = str(ref).strip()
    wanted = str(_uuid.UUID(ref)) if is_uuid(ref) else None
    for group in groups.values():
        if not group.deleted and (group.uuid == wanted or ref == str(element_id(group.uuid))):
            return group
    return None


# what a posted event nests that can have a sharing group of its own
_NESTED = ("Attribute", "Object", "EventReport", "Note", "Opinion", "Relationship")


def with_sharing_group_uuids(store: Store, item: Any) -> Any:
    """A copy of a posted event, attribute or object (or a list of them) with sharing_group_id
    turned into sharing_group_uuid, nested attributes, objects, event reports and analyst data
    too (PyMISP names a group by id only); raises UnknownSharingGroup."""
    groups: dict[str, SharingGroup] | None = None

    def fix(value: Any) -> Any:
        nonlocal groups
        if isinstance(value, list):
            return [fix(v) for v in value]
        if not isinstance(value, dict):
            return value
        out = dict(value)
        for key in _NESTED:
            if isinstance(out.get(key), list):
                out[key] = fix(out[key])
        ref = out.get("sharing_group_id")
        if ref in (None, "", 0, "0") or out.get("sharing_group_uuid") or isinstance(out.get("SharingGroup"), dict):
            return out
        if groups is None:
            groups = sg.current_groups(store)
        group = find_sharing_group(groups, ref)
        if group is None:
            raise UnknownSharingGroup(ref)
        out["sharing_group_uuid"] = group.uuid
        return out
    return fix(item)
