"""What a MISP peer sends this node, made ready for the store: MISP's own rules for what a sync
receiver keeps, then this node's inbound policy for that peer (decision 0032).

Both directions of MISP sync come here: events this node pulls from a MISP instance
(`pulled=True`) and events a MISP instance pushes to this node (events/add, events/edit). Per event:
1. MISP's pull downgrade (Server::__updatePulledEventBeforeInsert): a pulled event, object,
   attribute or report at "this community only" (1) is held at "your organisation only" (0), one at
   "connected communities" (2) at 1. A pushing MISP has downgraded already (2 is pushed as 1, 0 and
   1 are not pushed), so a pushed event is taken at its levels. Local tags never come along (the
   parse splits them out; they are left behind).
2. The MISP JSON is validated as any import (model/misp.py, leniently as MISP adds an event:
   decision 0028). An event without its creator (`Orgc`) is refused: provenance is the point.
3. The blocklists and the peer's pull filter decide the event; its elements that the filter
   refuses are withheld from it (and what cannot stay without them: an object's members, a
   reference to them), and max_distribution caps the levels.
4. Sharing-group data: MISP's sharing group (its organisations, from the SharingGroup block) is
   held by this node on the MISP community's behalf (bridge_sharing_group), and the data is kept
   only if this node's organisation and the MISP peer's are members: delivered onwards only to the
   group's organisations, never wider.
5. The event is signed by this node as its importer (decision 0001) with source "misp:<peer>",
   so only that MISP peer, through this bridge, revises it (the store's bridge rule).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from fedmisp.gossip.sharing_groups import SharingGroupError, create, current_groups, from_record, revise
from fedmisp.model.misp import EventError, Problem, drop_elements, parse_event, unwrap_events
from fedmisp.node.importer import FileResult, take_if_newer
from fedmisp.node.misp_config import MispPeer
from fedmisp.policy.filters import element_check, event_check
from fedmisp.policy.inbound import MISP_SOURCE
from fedmisp.policy.model import NodeState, element_view, event_view
from fedmisp.policy.pipeline import cap, sharing_group_reason
from fedmisp.policy.reasons import FILTER_REASONS, Reason

SHARING_GROUP = 4
INHERIT = 5
# MISP's pull downgrade of a level (1 -> 0, 2 -> 1; 0, 3, 4 and 5 as they are)
_PULLED = {1: 0, 2: 1}
MAX_SG_ORGS = 10_000


def misp_source(peer: MispPeer) -> str:
    """The source an event from `peer` is stored with (policy/inbound.py bridge_reason)."""
    return MISP_SOURCE + peer.name


@dataclass
class MispResult(FileResult):
    """FileResult with the reason code of each refusal (`reasons`, beside `refused`) and of each
    event the pull filter did not take (`filter_reasons`): what the metrics and audit log count."""
    reasons: list[Reason] = field(default_factory=list)
    filter_reasons: list[Reason] = field(default_factory=list)

    def refuse(self, reason: Reason, text: str) -> None:
        self.reasons.append(reason)
        self.refused.append(text)


def prepare_misp_events(node: Any, peer: MispPeer, document: Any, *, pulled: bool, label: str) -> MispResult:
    """The events of one MISP JSON document from `peer`, validated, decided and signed for the
    writer (`events`), or refused, filtered, unchanged or older, each counted or named with its
    reason. `document` is consumed (its events are changed in place)."""
    result = MispResult()
    state = NodeState(org_uuid=node.config.org_uuid, sharing_groups=current_groups(node.store),
                      blocked_events=node.config.blocked_events, blocked_orgs=node.config.blocked_orgs)
    defaults = node.import_defaults()
    for index, raw in enumerate(unwrap_events(document)):
        name = raw.get("uuid") if isinstance(raw, dict) and isinstance(raw.get("uuid"), str) else f"#{index}"
        where = f"{label}: event {name}"
        if not isinstance(raw, dict):
            result.refuse(Reason.MALFORMED, f"{where}: expected a MISP event (a JSON object)")
            continue
        orgc = raw.get("Orgc")
        if not isinstance(orgc, dict) or not orgc.get("uuid") or not orgc.get("name"):
            result.refuse(Reason.MALFORMED, f"{where}: field 'Orgc': missing; an event from a MISP peer must name "
                          "its creator organisation (uuid and name)")
            continue
        if pulled:
            downgrade_pulled(raw)
        groups = sharing_groups_of(raw)
        try:
            parsed = parse_event(raw, defaults, lenient=True)
        except EventError as e:
            result.refuse(Reason.MALFORMED, f"{where}: " + "; ".join(map(str, e.problems)))
            continue
        if parsed.uuid in state.blocked_events:
            result.refuse(Reason.BLOCKLIST_EVENT, f"{where}: {Reason.BLOCKLIST_EVENT.value} (in this node's "
                          "[blocklist] events)")
            continue
        view = event_view(parsed.header, [e.body for e in parsed.elements])
        if view.orgc_uuid in state.blocked_orgs:
            result.refuse(Reason.BLOCKLIST_ORG, f"{where}: {Reason.BLOCKLIST_ORG.value} (its creator is in "
                          "[blocklist] orgs)")
            continue
        check = event_check(peer.pull, view)
        level = cap(view.distribution, peer.pull) if check is None else None
        if level is None:
            result.filtered += 1
            result.filter_reasons.append(FILTER_REASONS[check or "distribution"][1])
            continue
        if view.distribution == SHARING_GROUP:
            reason = _group_reason(node, peer, state, view.sharing_group, groups)
            if reason is not Reason.ALLOWED:
                result.refuse(reason, f"{where}: {reason.value} (sharing group {view.sharing_group}: this node's "
                              f"organisation and {peer.name}'s must both be members)")
                continue
        parsed.header["distribution"] = level
        _decide_elements(node, peer, state, parsed, groups)
        parsed.local_tags = {}  # the MISP peer's own
        take_if_newer(node.identity, node.store, parsed, result, where, misp_source(peer))
    return result


def _levelled(raw: dict[str, Any]) -> list[dict[str, Any]]:
    """The event and every part of it that carries a distribution (MISP's JSON)."""
    parts = [raw]
    for key in ("Attribute", "EventReport"):
        parts.extend(p for p in raw.get(key) or () if isinstance(p, dict))
    for obj in raw.get("Object") or ():
        if isinstance(obj, dict):
            parts.append(obj)
            parts.extend(a for a in obj.get("Attribute") or () if isinstance(a, dict))
    return parts


def downgrade_pulled(raw: dict[str, Any]) -> None:
    """MISP's pull downgrade, in place: 1 is held as 0 and 2 as 1, on the event and every part."""
    for part in _levelled(raw):
        level = _level(part.get("distribution"))
        if level in _PULLED:
            part["distribution"] = str(_PULLED[level])


def _level(value: Any) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def sharing_groups_of(raw: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The SharingGroup blocks MISP includes with the event and its parts, by group uuid."""
    out: dict[str, dict[str, Any]] = {}
    for part in _levelled(raw):
        group = part.get("SharingGroup")
        if isinstance(group, dict) and isinstance(group.get("uuid"), str):
            out.setdefault(group["uuid"].lower(), group)
    return out


def misp_group_orgs(group: dict[str, Any]) -> dict[str, str] | None:
    """Org uuid -> name of a MISP SharingGroup block (its SharingGroupOrg list and its creator), or
    None when the block does not name its organisations."""
    orgs: dict[str, str] = {}
    entries = group.get("SharingGroupOrg")
    if not isinstance(entries, list) or len(entries) > MAX_SG_ORGS:
        return None
    for entry in entries:
        org = entry.get("Organisation") if isinstance(entry, dict) else None
        if isinstance(org, dict) and isinstance(org.get("uuid"), str):
            orgs[org["uuid"].lower()] = str(org.get("name", ""))
    creator = group.get("Organisation")
    if isinstance(creator, dict) and isinstance(creator.get("uuid"), str):
        orgs[creator["uuid"].lower()] = str(creator.get("name", ""))
    return orgs


def bridge_sharing_group(node: Any, peer: MispPeer, group: dict[str, Any]) -> Reason:
    """Hold a MISP sharing group on the MISP community's behalf: a sharing group of this node's
    (signed by it, so only it revises it) with the MISP group's uuid, name and organisations. A
    group this node holds already from its owner (a fedmisp group that reached MISP) is left as it
    is; one this node bridged follows MISP's membership. ALLOWED when the group is held now."""
    orgs = misp_group_orgs(group)
    group_uuid = str(group.get("uuid", "")).lower()
    if orgs is None:
        return Reason.MALFORMED
    own = node.config.org_uuid
    members = {org: False for org in orgs if org != own}
    name = str(group.get("name") or group_uuid)[:255]
    held = node.store.sharing_group(group_uuid)
    try:
        if held is None:
            if own not in orgs:
                return Reason.SG_NOT_MEMBER
            create(node.store, node.identity, own, name, members, str(group.get("releasability") or ""),
                   description=f"held for MISP peer {peer.name}", group_uuid=group_uuid)
            return Reason.ALLOWED
        current = from_record(held)
        if current.owner != own or held.author != node.identity.public_key:
            return Reason.ALLOWED  # another organisation's group: its owner decides who is in it
        if own not in orgs:  # MISP took this node's organisation out: nothing new through it
            revise(node.store, node.identity, own, group_uuid, delete=True)
            return Reason.SG_NOT_MEMBER
        wanted = {**members, own: True}
        if current.members != wanted or current.name != name:
            revise(node.store, node.identity, own, group_uuid, add=members,
                   remove=tuple(o for o in current.members if o not in wanted), name=name)
        return Reason.ALLOWED
    except SharingGroupError:
        return Reason.MALFORMED


def _group_reason(node: Any, peer: MispPeer, state: NodeState, group_uuid: str | None,
                  groups: dict[str, dict[str, Any]]) -> Reason:
    """Whether sharing-group data of `group_uuid` from `peer` may be kept, bridging the group first."""
    if not group_uuid:
        return Reason.SG_UNKNOWN
    if group_uuid in groups:
        bridged = bridge_sharing_group(node, peer, groups.pop(group_uuid))
        if bridged is not Reason.ALLOWED:
            return bridged
        state.sharing_groups.clear()
        state.sharing_groups.update(current_groups(node.store))
    return sharing_group_reason(group_uuid, peer.org_uuid, state, inbound=True)


def _decide_elements(node: Any, peer: MispPeer, state: NodeState, parsed: Any,
                     groups: dict[str, dict[str, Any]]) -> None:
    """Withhold the elements the pull filter or the sharing-group rule refuses (and what cannot stay
    without them), and cap the levels of the rest at the filter's max_distribution."""
    refused: dict[str, Problem] = {}
    for e in parsed.elements:
        view = element_view(e.body)
        check = element_check(peer.pull, view)
        if check is not None:
            refused[e.uuid] = Problem(e.uuid, check, FILTER_REASONS[check][1].value)
            continue
        if view.distribution == INHERIT:
            continue
        if view.distribution == SHARING_GROUP:
            reason = _group_reason(node, peer, state, view.sharing_group, groups)
            if reason is not Reason.ALLOWED:
                refused[e.uuid] = Problem(e.uuid, "sharing_group_uuid", reason.value)
            continue
        level = cap(view.distribution, peer.pull)
        if level is None:
            refused[e.uuid] = Problem(e.uuid, "distribution", Reason.PULL_FILTER_DISTRIBUTION.value)
        elif level != view.distribution:
            e.body["distribution"] = level
    if refused:
        # withheld by policy, not invalid: not reported as dropped
        drop_elements(parsed, refused, templates=node.store.published_templates())

