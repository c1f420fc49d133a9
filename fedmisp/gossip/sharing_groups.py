"""Sharing groups as signed revision records: create, revise, accept from peers, load for policy.

A revision's body: uuid, name, owner (org uuid), releasability, revision number and the members as
[org uuid, extend] pairs. The rules for who may sign which revision are policy's
(policy/sharing_groups.py); this module applies them against what the store holds.
"""
from __future__ import annotations

import uuid as _uuid
from typing import Any

from fedmisp.model.identity import Identity
from fedmisp.model.records import KIND_SHARING_GROUP, Record, seal
from fedmisp.policy.model import SharingGroup
from fedmisp.policy.reasons import Reason
from fedmisp.policy.sharing_groups import check_revision
from fedmisp.store.store import Store

MAX_MEMBERS = 10_000  # a sharing group is a list of organisations, not of users


class SharingGroupError(ValueError):
    pass


def from_record(record: Record) -> SharingGroup:
    body = record.body
    if not isinstance(body, dict) or not isinstance(body.get("members"), list) \
            or not all(isinstance(m, list) and len(m) == 2 and isinstance(m[0], str) and isinstance(m[1], bool)
                       for m in body["members"]) or len(body["members"]) > MAX_MEMBERS:
        raise SharingGroupError("sharing group: members must be [org uuid, extend] pairs")
    for key, kind in (("uuid", str), ("name", str), ("owner", str), ("revision", int), ("releasability", str)):
        if not isinstance(body.get(key), kind):
            raise SharingGroupError(f"sharing group: {key} must be a {kind.__name__}")
    if not isinstance(body.get("description", ""), str) or not isinstance(body.get("deleted", False), bool):
        raise SharingGroupError("sharing group: description must be a str and deleted a bool")
    return SharingGroup(uuid=body["uuid"], name=body["name"], owner=body["owner"], revision=body["revision"],
                        members={org: extend for org, extend in body["members"]},
                        releasability=body["releasability"], description=body.get("description", ""),
                        deleted=body.get("deleted", False))


def to_body(group: SharingGroup) -> dict[str, Any]:
    body: dict[str, Any] = {
        "members": sorted([org, extend] for org, extend in group.members.items()), "name": group.name,
        "owner": group.owner, "releasability": group.releasability, "revision": group.revision,
        "uuid": group.uuid}
    # optional fields only when set, so a group that uses neither signs the same body as before
    if group.description:
        body["description"] = group.description
    if group.deleted:
        body["deleted"] = True
    return dict(sorted(body.items()))


def accept(store: Store, record: Record, own_org: str, own_key: bytes) -> Reason:
    """Store a sharing-group revision if the rules allow it (from this node or from a peer)."""
    try:
        new = from_record(record)
    except SharingGroupError:
        return Reason.MALFORMED
    author_org = own_org if record.author == own_key else store.org_for_key(record.author)
    if author_org is None:
        return Reason.UNKNOWN_AUTHOR
    current = store.sharing_group(new.uuid)
    reason = check_revision(from_record(current) if current is not None else None, new, author_org)
    if reason is Reason.ALLOWED:
        store.put_sharing_group(record, new.uuid)
    return reason


def create(store: Store, identity: Identity, own_org: str, name: str, members: dict[str, bool],
           releasability: str = "", *, description: str = "", group_uuid: str | None = None) -> SharingGroup:
    _check_members(members)
    if group_uuid is not None and store.sharing_group(group_uuid) is not None:
        raise SharingGroupError(f"sharing group {group_uuid} exists already")
    group = SharingGroup(uuid=group_uuid or str(_uuid.uuid4()), name=name, owner=own_org, revision=1,
                         members={**members, own_org: True}, releasability=releasability,
                         description=description)
    reason = accept(store, seal(identity, KIND_SHARING_GROUP, to_body(group)), own_org, identity.public_key)
    if reason is not Reason.ALLOWED:
        raise SharingGroupError(f"sharing group refused: {reason.value}")
    return group


def _check_members(members: dict[str, bool]) -> None:
    for org in members:
        try:
            _uuid.UUID(org)
        except ValueError:
            raise SharingGroupError(f"member {org!r} is not an organisation uuid") from None


def revise(store: Store, identity: Identity, own_org: str, group_uuid: str, *,
           add: dict[str, bool] | None = None, remove: tuple[str, ...] = (), name: str | None = None,
           releasability: str | None = None, description: str | None = None,
           delete: bool = False) -> SharingGroup:
    """The group's next revision, signed by this node. `delete` leaves only the owner a member and
    marks the group deleted, so no other node receives anything new through it."""
    current = store.sharing_group(group_uuid)
    if current is None:
        raise SharingGroupError(f"no sharing group {group_uuid}")
    group = from_record(current)
    _check_members(add or {})
    members = {org: extend for org, extend in group.members.items() if org not in remove}
    members.update(add or {})
    if delete:
        members = {group.owner: True}
    new = SharingGroup(group.uuid, group.name if name is None else name, group.owner, group.revision + 1, members,
                       group.releasability if releasability is None else releasability,
                       group.description if description is None else description, group.deleted or delete)
    reason = accept(store, seal(identity, KIND_SHARING_GROUP, to_body(new)), own_org, identity.public_key)
    if reason is not Reason.ALLOWED:
        raise SharingGroupError(f"revision refused: {reason.value} (only the owner may remove members; "
                                "an extend member may only add)")
    return new


def current_groups(store: Store) -> dict[str, SharingGroup]:
    return {g.uuid: g for g in (from_record(r) for r in store.sharing_groups())}
