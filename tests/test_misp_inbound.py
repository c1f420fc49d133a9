"""What a MISP peer sends, made ready for the store (node/misp_inbound.py, decision 0032): MISP's
pull downgrade, local tags left behind, the creator kept, the peer's pull filter, sharing groups held
on the MISP community's behalf, and the event stored as that MISP peer's (the bridge rule)."""
from __future__ import annotations

import uuid

from fedmisp.gossip.sharing_groups import current_groups
from fedmisp.node.misp_config import MispPeer
from fedmisp.node.misp_inbound import misp_source, prepare_misp_events
from fedmisp.policy.model import SyncFilter
from fedmisp.policy.reasons import Reason
from fedmisp.store.events import WriteOutcome

MISP_ORG = {"uuid": "3c21e55a-edac-4321-960b-cda533f50a78", "name": "ORG-A"}
OTHER_ORG = {"uuid": "4d32f66b-0000-4000-8000-000000000002", "name": "ORG-C"}


def _peer(**pull) -> MispPeer:
    return MispPeer(name="community-a", url="http://127.0.0.1:1", org_uuid=MISP_ORG["uuid"],
                    pull=SyncFilter(**pull) if pull else SyncFilter())


def _attribute(n: int, distribution: int, **extra) -> dict:
    return {"uuid": str(uuid.UUID(int=1000 + n)), "type": "ip-dst", "category": "Network activity",
            "value": f"198.51.100.{n}", "distribution": str(distribution), "to_ids": True,
            "timestamp": "1700000000", **extra}


def _event(n: int, distribution: int, attributes: list[dict], **extra) -> dict:
    return {"uuid": str(uuid.UUID(int=n)), "info": f"misp event {n}", "date": "2023-11-14",
            "threat_level_id": "2", "analysis": "1", "distribution": str(distribution), "published": True,
            "timestamp": "1700000000", "Orgc": dict(MISP_ORG), "Org": dict(MISP_ORG), "Attribute": attributes,
            **extra}


def _store(node, result):
    outcomes = node.store.write_events(result.events)
    assert all(o is WriteOutcome.STORED for o in outcomes), outcomes
    return outcomes


def _held(node, n: int) -> dict:
    return node.store.export_event(str(uuid.UUID(int=n)))["Event"]


def test_a_pulled_event_is_downgraded_as_misp_pulls_and_a_pushed_one_is_taken_at_its_levels(node):
    pulled = _event(1, 1, [_attribute(1, 2), _attribute(2, 1), _attribute(3, 3), _attribute(4, 5)],
                    Tag=[{"name": "tlp:green"}, {"name": "misp-a:internal", "local": True}])
    pushed = _event(2, 2, [_attribute(5, 2)])
    result = prepare_misp_events(node, _peer(), {"response": [{"Event": pulled}]}, pulled=True, label="pull")
    assert result.refused == [] and len(result.events) == 1
    also = prepare_misp_events(node, _peer(), {"Event": pushed}, pulled=False, label="push")
    _store(node, result), _store(node, also)
    held = _held(node, 1)
    assert held["distribution"] == "0" and held["Orgc"]["uuid"] == MISP_ORG["uuid"]
    assert {a["value"]: a["distribution"] for a in held["Attribute"]} == {
        "198.51.100.1": "1", "198.51.100.2": "0", "198.51.100.3": "3", "198.51.100.4": "5"}
    assert [t["name"] for t in held["Tag"]] == ["tlp:green"]  # the MISP peer's local tag stayed there
    assert _held(node, 2)["distribution"] == "2" and _held(node, 2)["Attribute"][0]["distribution"] == "2"
    assert node.store.event_meta(str(uuid.UUID(int=1))).source == misp_source(_peer()) == "misp:community-a"


def test_an_event_without_its_creator_or_that_does_not_validate_is_refused_and_the_rest_goes_on(node):
    no_orgc = _event(3, 3, [_attribute(6, 5)])
    del no_orgc["Orgc"]
    bad = _event(4, 3, [_attribute(7, 5)], date="yesterday")
    good = _event(5, 3, [_attribute(8, 5), _attribute(9, 5, type="no-such-type")])
    result = prepare_misp_events(node, _peer(), [no_orgc, bad, good, "junk"], pulled=True, label="http://misp")
    assert len(result.events) == 1 and len(result.refused) == 3 and result.reasons == [Reason.MALFORMED] * 3
    assert "event 00000000-0000-0000-0000-000000000003: field 'Orgc': missing" in result.refused[0]
    assert "field 'date'" in result.refused[1] and "expected a MISP event" in result.refused[2]
    assert len(result.dropped[0]) == 1 and "no-such-type" in result.dropped[0][0]  # as MISP adds an event
    _store(node, result)
    assert [a["value"] for a in _held(node, 5)["Attribute"]] == ["198.51.100.8"]


def test_the_pull_filter_decides_events_and_withholds_elements_with_what_cannot_stay_without_them(node):
    member = _attribute(10, 5, object_relation="ip")
    kept = _event(6, 3, [_attribute(11, 3), _attribute(12, 5, type="email-dst", category="Network activity",
                                                        value="x@example.org")],
                  Object=[{"uuid": str(uuid.UUID(int=600)), "name": "ip-port", "meta-category": "network",
                           "template_uuid": "9f8cea74-16fe-4968-a2b4-026676949ac6", "template_version": "9",
                           "description": "", "distribution": "5", "timestamp": "1700000000",
                           "Attribute": [dict(member, Tag=[{"name": "secret"}])]}])
    filtered = _event(7, 3, [_attribute(13, 5)], Tag=[{"name": "tlp:red"}])
    peer = _peer(tags_exclude=frozenset({"tlp:red", "secret"}), types_exclude=frozenset({"email-dst"}),
                 max_distribution=1)
    result = prepare_misp_events(node, peer, [kept, filtered], pulled=False, label="push")
    assert result.filtered == 1 and result.refused == [] and result.dropped == [()]
    assert result.filter_reasons == [Reason.PULL_FILTER_TAG]
    _store(node, result)
    held = _held(node, 6)
    assert held["distribution"] == "1"  # max_distribution caps the levels
    assert [(a["value"], a["distribution"]) for a in held["Attribute"]] == [("198.51.100.11", "1")]
    assert held.get("Object", []) == []


def test_a_misp_sharing_group_is_held_for_the_community_and_its_data_kept_only_for_members(node):
    own = {"uuid": node.config.org_uuid, "name": node.config.org_name}

    def group(n: int, *orgs: dict) -> dict:
        return {"uuid": str(uuid.UUID(int=9000 + n)), "name": f"misp group {n}", "releasability": "members",
                "Organisation": dict(MISP_ORG),
                "SharingGroupOrg": [{"Organisation": dict(o)} for o in orgs]}
    with_us = group(1, own, OTHER_ORG)
    without_us = group(2, OTHER_ORG)
    event = _event(8, 4, [_attribute(14, 5), _attribute(15, 4, SharingGroup=without_us,
                                                         sharing_group_id="7")],
                   SharingGroup=with_us, sharing_group_id="6")
    result = prepare_misp_events(node, _peer(), {"Event": event}, pulled=True, label="pull")
    assert result.refused == []
    _store(node, result)
    held = _held(node, 8)
    assert held["distribution"] == "4" and held["sharing_group_uuid"] == with_us["uuid"]
    assert [a["value"] for a in held["Attribute"]] == ["198.51.100.14"]  # the other group's item stays out
    groups = current_groups(node.store)
    assert set(groups) == {with_us["uuid"]}
    assert set(groups[with_us["uuid"]].members) == {own["uuid"], MISP_ORG["uuid"], OTHER_ORG["uuid"]}
    # a whole event of a group this node's organisation is not in is refused, naming the group
    outside = prepare_misp_events(node, _peer(), {"Event": _event(9, 4, [_attribute(16, 5)], SharingGroup=without_us)},
                                  pulled=True, label="pull")
    assert outside.events == [] and outside.reasons == [Reason.SG_NOT_MEMBER]
    assert Reason.SG_NOT_MEMBER.value in outside.refused[0]
    # MISP takes an organisation out of the group: the held group follows at the next event
    later = _event(10, 4, [_attribute(17, 5)], SharingGroup=group(1, own), timestamp="1700000100")
    _store(node, prepare_misp_events(node, _peer(), {"Event": later}, pulled=True, label="pull"))
    assert set(current_groups(node.store)[with_us["uuid"]].members) == {own["uuid"], MISP_ORG["uuid"]}


def test_an_unchanged_event_is_not_signed_again_and_a_newer_one_revises_it_through_the_bridge_only(node):
    first = _event(11, 3, [_attribute(18, 5)])
    _store(node, prepare_misp_events(node, _peer(), {"Event": dict(first)}, pulled=True, label="pull"))
    again = prepare_misp_events(node, _peer(), {"Event": _event(11, 3, [_attribute(18, 5)])}, pulled=True,
                                label="pull")
    assert again.events == [] and again.unchanged == 1
    newer = _event(11, 3, [_attribute(18, 5), _attribute(19, 5)], timestamp="1700000200")
    other = MispPeer(name="community-b", url="http://127.0.0.1:2", org_uuid=OTHER_ORG["uuid"])
    by_other = prepare_misp_events(node, other, {"Event": newer}, pulled=True, label="pull")
    assert node.store.write_events(by_other.events) == [Reason.NOT_BRIDGE]
    newer = _event(11, 3, [_attribute(18, 5), _attribute(19, 5)], timestamp="1700000200")
    _store(node, prepare_misp_events(node, _peer(), {"Event": newer}, pulled=True, label="pull"))
    assert len(_held(node, 11)["Attribute"]) == 2


def test_the_blocklists_refuse_an_event_from_a_misp_peer_by_uuid_and_by_creator(node, tmp_path):
    from dataclasses import replace
    blocked_event, blocked_org = _event(12, 3, [_attribute(20, 5)]), _event(13, 3, [_attribute(21, 5)])
    blocked_org["Orgc"] = dict(OTHER_ORG)
    node.config = replace(node.config, blocked_events=frozenset({blocked_event["uuid"]}),
                          blocked_orgs=frozenset({OTHER_ORG["uuid"]}))
    result = prepare_misp_events(node, _peer(), [blocked_event, blocked_org, _event(14, 3, [_attribute(22, 5)])],
                                 pulled=True, label="pull")
    assert result.reasons == [Reason.BLOCKLIST_EVENT, Reason.BLOCKLIST_ORG]
    assert len(result.events) == 1 and [r.split(": ")[2] for r in result.refused] == [
        "blocklist-event (in this node's [blocklist] events)", "blocklist-org (its creator is in [blocklist] orgs)"]
