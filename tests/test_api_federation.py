"""What API changes do across a federation: two real nodes (real stores, keys, configs) replicating
in process, one of them answering the real PyMISP client on 127.0.0.1. Local tags stay on the node
that made them; sightings and sharing-group revisions travel to whom the rules allow."""
from __future__ import annotations

import asyncio
import threading
from contextlib import contextmanager
from typing import Iterator

from aiohttp import web
from pymisp import MISPSharingGroup, PyMISP

from factories import event as factory_event
from federation import make_federation, settle
from fedmisp.gossip import sharing_groups as sg
from fedmisp.model.misp import parse_event
from fedmisp.model.revision import sign_event
from fedmisp.node.api.app import make_app
from fedmisp.node.api.helpers import ApiContext
from fedmisp.node.home import Node
from fedmisp.store.writer import Writer


@contextmanager
def api(node: Node) -> Iterator[PyMISP]:
    """The node's REST API on a free 127.0.0.1 port (its own event loop thread), and an admin client."""
    loop = asyncio.new_event_loop()
    writer = Writer(node.store)
    runner = web.AppRunner(make_app(ApiContext(node, writer)))
    loop.run_until_complete(runner.setup())
    loop.run_until_complete(web.TCPSite(runner, "127.0.0.1", 0).start())
    port = runner.addresses[0][1]
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    try:
        yield PyMISP(f"http://127.0.0.1:{port}", node.create_api_key("admin", "federation test"), ssl=False)
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=30)
        loop.run_until_complete(runner.cleanup())
        loop.close()
        writer.close()


def publish_on(node: Node, seed: int) -> dict:
    """A published, all-communities event created by `node`'s organisation."""
    raw = factory_event(seed=seed, attributes=3, objects=0)["Event"]
    raw["Orgc"] = {"name": node.config.org_name, "uuid": node.config.org_uuid}
    node.store.write_events([sign_event(node.identity, parse_event(raw, node.import_defaults()))])
    return raw


def tags(exported: dict) -> set[str]:
    return {t["name"] for t in exported.get("Tag", [])}


def test_local_tags_stay_home_and_sightings_go_back_to_the_creator(tmp_path):
    nodes = make_federation(tmp_path, ["a", "b"], [("a", "b")])
    a, b = nodes["a"], nodes["b"]
    raw = publish_on(a, 5)
    settle(nodes)
    attribute = b.store.export_event(raw["uuid"])["Event"]["Attribute"][0]  # one B may hold
    with api(b) as misp:
        assert misp.tag(raw["uuid"], "b:watchlist", local=True)["saved"] is True
        answer = misp.tag(attribute["uuid"], "b:checked", local=True)
        assert answer.get("saved") is True, answer
        misp.add_sighting({"value": attribute["value"], "source": "b-sensor"})
    settle(nodes)
    on_a = a.store.export_event(raw["uuid"])["Event"]
    assert "b:watchlist" not in tags(on_a)
    assert all("b:checked" not in tags(x) for x in on_a["Attribute"])
    sighted = next(x for x in on_a["Attribute"] if x["uuid"] == attribute["uuid"])
    assert [s["source"] for s in sighted["Sighting"]] == ["b-sensor"]
    # A revises its event: B takes the new revision and keeps its own local tags
    revised = dict(raw, info="revised by a", timestamp=str(int(raw["timestamp"]) + 10))
    a.store.write_events([sign_event(a.identity, parse_event(revised, a.import_defaults()),
                                     a.store.previous_elements(raw["uuid"]).get)])
    settle(nodes)
    on_b = b.store.export_event(raw["uuid"])["Event"]
    assert on_b["info"] == "revised by a" and "b:watchlist" in tags(on_b)
    for node in nodes.values():
        assert node.store.check_integrity() == []
        node.close()


def test_a_sharing_group_made_through_the_api_reaches_its_members_and_its_deletion_too(tmp_path):
    nodes = make_federation(tmp_path, ["a", "b", "c"], [("a", "b"), ("b", "c")])
    a, b, c = nodes["a"], nodes["b"], nodes["c"]
    settle(nodes)  # org records travel: b knows a and c
    with api(b) as misp:
        new = MISPSharingGroup()
        new.from_dict(name="b and a", SharingGroupOrg=[{"org_uuid": a.config.org_uuid}])
        group = misp.add_sharing_group(new, pythonify=True)
        settle(nodes)
        assert sg.current_groups(a.store)[group.uuid].members == {a.config.org_uuid: False, b.config.org_uuid: True}
        assert group.uuid not in sg.current_groups(c.store)  # not a member: never sent
        assert misp.delete_sharing_group(group.id)["success"] is True
    settle(nodes)
    # The deletion is a revision that leaves only the owner a member; a, which it removed, is sent it
    # too (it was a member) and no longer lists the group; c never was and still knows nothing of it.
    assert sg.current_groups(b.store)[group.uuid].deleted
    assert sg.current_groups(a.store)[group.uuid].deleted
    assert group.uuid not in sg.current_groups(c.store)
    with api(a) as misp:
        assert all(g.uuid != group.uuid for g in misp.sharing_groups(pythonify=True))
    for node in nodes.values():
        node.close()
