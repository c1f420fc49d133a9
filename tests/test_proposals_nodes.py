"""A proposal's whole trip between real node processes, driven with the real PyMISP client:
c - b - a in a line; a creates the event, c proposes two hops away, a accepts, c sees the result."""
from __future__ import annotations

import pytest
from pymisp import MISPAttribute, MISPEvent, MISPShadowAttribute, PyMISP

from fedmisp.node.home import Node
from nodes import configure, running, wait_for


def _keys(nodes) -> dict[str, dict[str, str]]:
    out = {}
    for name, process in nodes.items():
        node = Node.open(process.home)
        try:
            out[name] = {role: node.create_api_key(role, "proposal test") for role in ("user", "publisher")}
        finally:
            node.close()
    return out


def _proposal_ids(misp: PyMISP, event: str) -> set[str]:
    listed = misp.attribute_proposals(event)
    assert isinstance(listed, list), listed
    return {p["ShadowAttribute"]["id"] for p in listed}


@pytest.mark.slow
def test_a_proposal_two_hops_from_the_creator_is_accepted_there_and_the_revision_comes_back(tmp_path):
    nodes = configure(tmp_path, ["a", "b", "c"], [("a", "b"), ("b", "c")])
    keys = _keys(nodes)
    with running(nodes):
        misp = {n: {role: PyMISP(f"http://127.0.0.1:{nodes[n].port}", key, ssl=False)
                    for role, key in keys[n].items()} for n in nodes}
        event = MISPEvent()
        event.info = "credential phishing, shared with everyone"
        event.distribution = 3
        event.published = True
        event.add_attribute("ip-dst", "198.51.100.20", to_ids=True)
        created = misp["a"]["publisher"].add_event(event, pythonify=True)
        ip = created.attributes[0]
        wait_for(lambda: misp["c"]["user"].event_exists(created.uuid), what="the event to reach c")

        # at c, two hops from the creator: PyMISP's own edits become proposals (c may not revise a's event)
        added = misp["c"]["user"].add_attribute(created.uuid, {"type": "domain", "value": "login-bank.example"},
                                                pythonify=True)
        change = MISPAttribute()
        change.from_dict(type="ip-dst", value="198.51.100.21", comment="moved to a new host")
        changed = misp["c"]["user"].update_attribute(change, ip.uuid, pythonify=True)
        assert isinstance(added, MISPShadowAttribute) and isinstance(changed, MISPShadowAttribute)
        proposals = {added.id, changed.id}  # a proposal's id is the same on every node
        assert _proposal_ids(misp["c"]["user"], created.uuid) == proposals

        wait_for(lambda: _proposal_ids(misp["a"]["user"], created.uuid) == proposals, what="the proposals to reach a")
        at_a = misp["a"]["user"].get_event(created.uuid)["Event"]
        assert [p["value"] for p in at_a["ShadowAttribute"]] == ["login-bank.example"]
        assert at_a["Attribute"][0]["ShadowAttribute"][0]["comment"] == "moved to a new host"
        # only the creator decides: c and b may not
        for n in ("b", "c"):
            refused = misp[n]["user"].accept_attribute_proposal(added.id)
            assert refused["errors"][0] == 403, refused

        assert misp["a"]["user"].accept_attribute_proposal(added.id)["message"] == "Proposal accepted."
        assert misp["a"]["user"].accept_attribute_proposal(changed.id)["message"] == "Proposed change accepted."
        assert _proposal_ids(misp["a"]["user"], created.uuid) == set()
        misp["a"]["publisher"].publish(created.uuid)  # accepting unpublishes, as in MISP; publishing shares

        def arrived_at_c() -> bool:
            shown = misp["c"]["user"].get_event(created.uuid, pythonify=True)
            values = {(a.value, a.comment) for a in shown.attributes}
            return values == {("login-bank.example", ""), ("198.51.100.21", "moved to a new host")}
        wait_for(arrived_at_c, what="the accepted revision to reach c")
        wait_for(lambda: not _proposal_ids(misp["c"]["user"], created.uuid)
                 and not _proposal_ids(misp["b"]["user"], created.uuid), what="the proposals to close at b and c")
        shown = misp["c"]["user"].get_event(created.uuid)["Event"]
        assert not shown.get("ShadowAttribute") and not any(a.get("ShadowAttribute") for a in shown["Attribute"])
        assert shown["Orgc"]["name"] == "Org a"  # still a's event, revised by a
    for process in nodes.values():
        assert process.integrity() == []
