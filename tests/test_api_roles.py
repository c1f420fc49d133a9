"""Every route of the REST API states who may call it (docs/api.md, "Authentication and roles"), and
the API refuses a key of a lower role, and a request with no key, before the handler runs.

ROLES_OF is docs/api.md's role table by handler, written out here so that a route whose role is
lowered, or whose access is dropped, fails a test; a route added without an entry fails too.
The requests go to the real application (make_app over a real node's store) in process."""
from __future__ import annotations

import asyncio
import re

import pytest
from aiohttp.test_utils import TestClient, TestServer

from fedmisp.node.api.app import make_app
from fedmisp.node.api.helpers import ApiContext
from fedmisp.node.home import ROLES, init_home
from fedmisp.store.writer import Writer

READ_ONLY, USER, PUBLISHER, ADMIN = ROLES

# docs/api.md: read-only views, index, search; user adds, edits, deletes, tags (galaxy clusters
# too), sights, proposes; publisher publishes; admin manages tags, sharing groups and organisations;
# taxonomies and warninglists are read-only for every role.
ROLES_OF = {
    "misp_sync.filter_for_push": "sync", "misp_sync.sightings_held": "sync", "misp_sync.sightings_save": "sync",
    "misp_sync.proposals_push": "sync",  # MISP's server sync only (docs/api.md "MISP server sync")
    "instance.get_version": READ_ONLY, "instance.user_me": READ_ONLY, "instance.describe": READ_ONLY,
    "events.event_index": READ_ONLY, "events.event_view": READ_ONLY, "search.event_search": READ_ONLY,
    "attributes.attribute_view": READ_ONLY, "search.attribute_search": READ_ONLY,
    "events.event_add": USER, "events.event_edit": USER, "events.event_delete": USER,
    "attributes.attribute_add": USER, "attributes.attribute_edit": USER, "attributes.attribute_delete": USER,
    "events.event_publish": PUBLISHER, "events.event_unpublish": PUBLISHER,
    "objects.object_view": READ_ONLY,
    "reports.report_view": READ_ONLY, "reports.report_index": READ_ONLY,
    "reports.report_add": USER, "reports.report_edit": USER, "reports.report_delete": USER,
    "analyst.analyst_view": READ_ONLY, "analyst.analyst_index": READ_ONLY,
    "analyst.analyst_add": USER, "analyst.analyst_edit": USER, "analyst.analyst_delete": USER,
    "objects.object_add": USER, "objects.object_edit": USER, "objects.object_delete": USER,
    "objects.reference_add": USER, "objects.reference_delete": USER,
    "orgs.org_index": READ_ONLY, "orgs.org_view": READ_ONLY, "orgs.org_add": ADMIN,
    "orgs.sharing_group_index": READ_ONLY, "orgs.sharing_group_view": READ_ONLY,
    "orgs.sharing_group_add": ADMIN, "orgs.sharing_group_edit": ADMIN,
    "orgs.sharing_group_delete": ADMIN, "orgs.sharing_group_add_org": ADMIN,
    "orgs.sharing_group_remove_org": ADMIN,
    "proposals.proposal_view": READ_ONLY, "proposals.proposal_index": READ_ONLY,
    "proposals.proposal_add": USER, "proposals.proposal_edit": USER,
    "proposals.proposal_delete": USER, "proposals.proposal_accept": USER,
    "proposals.proposal_discard": USER,
    "sightings.list_sightings": READ_ONLY, "sightings.search_sightings": READ_ONLY,
    "sightings.sighting_add": USER,
    "tags.tag_index": READ_ONLY, "tags.tag_view": READ_ONLY,
    "tags.tag_attach": USER, "tags.tag_remove": USER,
    "tags.tag_add": ADMIN, "tags.tag_edit": ADMIN, "tags.tag_delete": ADMIN,
    "taxonomies.taxonomy_index": READ_ONLY, "taxonomies.taxonomy_view": READ_ONLY,
    "taxonomies.warninglist_index": READ_ONLY, "taxonomies.warninglist_view": READ_ONLY,
    "taxonomies.warninglist_check_value": READ_ONLY,
    "taxonomies.tag_search": READ_ONLY, "taxonomies.tag_search_named": READ_ONLY,
    # enable, disable, update: refused to every key (the node keeps no such state), so no role is needed
    "taxonomies.vocabulary_fixed": READ_ONLY,
    "galaxies.galaxy_index": READ_ONLY, "galaxies.galaxy_view": READ_ONLY,
    "galaxies.cluster_index": READ_ONLY, "galaxies.cluster_view": READ_ONLY,
    "galaxies.cluster_search": READ_ONLY, "galaxies.cluster_attach": USER,
    "clusters.cluster_add": USER, "clusters.cluster_edit": USER, "clusters.cluster_delete": USER,
    "clusters.cluster_publish": PUBLISHER, "clusters.cluster_unpublish": PUBLISHER,
    "templates.template_index": READ_ONLY, "templates.template_view": READ_ONLY,
    "templates.template_raw": READ_ONLY,
}


def _handler_name(handler) -> str:
    return f"{handler.__module__.rsplit('.', 1)[-1]}.{handler.__name__}"


def _routes() -> list[tuple[str, str, str]]:
    """(method, a concrete path, handler name) of every route, placeholders filled in."""
    app = make_app(ApiContext(node=None, writer=None))  # type: ignore[arg-type]  (only its router is read)
    out = []
    for r in app.router.routes():
        if r.method == "HEAD":
            continue
        out.append((r.method, _concrete(r.resource.canonical), _handler_name(r.handler)))
    return out


def _concrete(canonical: str) -> str:
    """A route's path with its placeholders filled in."""
    fill = {"tail": "", "hard": "", "opts": "", "uuid": "5b1e1d7a-0c1e-4c57-9a3b-8f6f2b3f0c11"}
    return re.sub(r"\{(\w+)(:[^{}]*)?\}", lambda m: fill.get(m.group(1), "1"), canonical)


ROUTES = _routes()


def test_every_route_states_the_role_docs_api_md_gives_it():
    app = make_app(ApiContext(node=None, writer=None))  # type: ignore[arg-type]
    declared = {_handler_name(r.handler): getattr(r.handler, "access", None) for r in app.router.routes()}
    assert {h: r for h, r in declared.items() if ROLES_OF.get(h) != r} == {}, \
        "a route's role differs from docs/api.md's table (None: the route is public)"


@pytest.fixture(scope="module")
def client_keys(tmp_path_factory):
    node, admin = init_home(tmp_path_factory.mktemp("roles") / "node", "Roles CSIRT", "127.0.0.1:0")
    keys = {role: node.create_api_key(role, f"test {role}") for role in ROLES}
    keys[ADMIN] = admin
    writer = Writer(node.store)
    yield node, writer, keys
    writer.close()
    node.close()


async def _answers(node, writer, requests: list[tuple[str, str, dict]]) -> list[tuple[int, str]]:
    return await _answers_app(make_app(ApiContext(node, writer)), requests)


async def _answers_app(app, requests: list[tuple[str, str, dict]]) -> list[tuple[int, str]]:
    async with TestClient(TestServer(app)) as client:
        out = []
        for method, path, headers in requests:
            async with client.request(method, path, headers={"Accept": "application/json", **headers},
                                      data=b"{}") as response:
                out.append((response.status, await response.text()))
        return out


def test_a_key_below_a_routes_role_is_refused_before_the_handler_runs(client_keys):
    node, writer, keys = client_keys
    cases = [(m, p, h, ROLES[ROLES.index(ROLES_OF[h]) - 1]) for m, p, h in ROUTES if ROLES_OF.get(h, READ_ONLY) in ROLES[1:]]
    answers = asyncio.run(_answers(node, writer, [(m, p, {"Authorization": keys[below]}) for m, p, _h, below in cases]))
    wrong = [(m, p, below, status) for (m, p, h, below), (status, text) in zip(cases, answers)
             if status != 403 or f"needs {ROLES_OF[h]}" not in text]
    assert wrong == [], "a lower role was let through"


@pytest.mark.parametrize("headers", [{}, {"Authorization": ""}, {"Authorization": "not-a-key"},
                                     {"X-MISP-AUTH": "not-a-key"}, {"Authorization": "Bearer not-a-key"}])
def test_a_request_without_a_valid_api_key_is_refused_on_every_route(client_keys, headers):
    node, writer, _keys = client_keys
    answers = asyncio.run(_answers(node, writer, [(m, p, headers) for m, p, _h in ROUTES]))
    wrong = [(m, p, status) for (m, p, _h), (status, text) in zip(ROUTES, answers)
             if status != 403 or "Authentication failed" not in text]
    assert wrong == []


@pytest.mark.parametrize("header", ["Authorization", "X-MISP-AUTH", "Bearer"])
def test_a_valid_key_is_read_from_each_header_misp_clients_use(client_keys, header):
    node, writer, keys = client_keys
    headers = {"Authorization": f"Bearer {keys[READ_ONLY]}"} if header == "Bearer" else {header: keys[READ_ONLY]}
    [(status, text)] = asyncio.run(_answers(node, writer, [("GET", "/users/view/me", headers)]))
    assert status == 200 and READ_ONLY in text
    # a read-only key is still read-only however it is sent
    [(status, text)] = asyncio.run(_answers(node, writer, [("POST", "/events/add", headers)]))
    assert status == 403 and "needs user" in text


def test_a_key_of_exactly_a_routes_role_gets_past_the_role_check(client_keys):
    node, writer, keys = client_keys
    laddered = [(m, p, h) for m, p, h in ROUTES if ROLES_OF.get(h, ADMIN) in ROLES]
    answers = asyncio.run(_answers(node, writer, [(m, p, {"Authorization": keys[ROLES_OF.get(h, ADMIN)]})
                                                  for m, p, h in laddered]))
    refused = [(m, p, status) for (m, p, _h), (status, text) in zip(laddered, answers)
               if status == 403 and ("needs" in text or "Authentication failed" in text)]
    assert refused == []


def _node_app(node, writer):
    """The application `fedmisp run` serves (node/server.py), over a real node's store."""
    from fedmisp.gossip.service import Gossiper
    from fedmisp.node.feed_fetch import FeedFetcher
    from fedmisp.node.metrics import NodeMetrics
    from fedmisp.node.server import node_app

    async def run_blocking(fn, *args):
        return await asyncio.get_running_loop().run_in_executor(None, fn, *args)
    gossiper = Gossiper(node, run_blocking)
    fetcher = FeedFetcher(node, lambda events: None, run_blocking)
    return node_app(ApiContext(node, writer), gossiper, fetcher, NodeMetrics(node), run_blocking)


def test_every_route_the_node_serves_declares_who_may_call_it(client_keys):
    from fedmisp.node.api.access import ACCESS, declared
    node, writer, _keys = client_keys
    routes = list(_node_app(node, writer).router.routes())
    paths = {r.resource.canonical for r in routes}
    assert {"/fed/v1/changes", "/node/v1/peers", "/node/v1/health", "/node/v1/metrics",
            "/feed/{name}/manifest.json", "/events/index"} <= paths  # every sub-application is walked
    assert [(r.method, r.resource.canonical) for r in routes if declared(r.handler) not in ACCESS] == []


def test_a_route_that_declares_no_access_stops_the_node_from_starting(client_keys):
    from fedmisp.node.api.access import UndeclaredAccess
    node, writer, _keys = client_keys

    async def undeclared(request):
        return None
    app = _node_app(node, writer)
    app.router.add_get("/events/undeclared", undeclared)

    async def start() -> None:
        server = TestServer(app)
        try:
            await server.start_server()
        finally:
            await server.close()
    with pytest.raises(UndeclaredAccess, match="declare no access.*GET /events/undeclared"):
        asyncio.run(start())


def test_a_route_cannot_be_declared_without_an_access_nor_one_handler_with_two():
    from fedmisp.node.api.access import MispRoutes
    routes = MispRoutes()

    async def handler(request):
        return None
    with pytest.raises(TypeError, match="declares its access"):
        routes.post("/events/x")(handler)
    routes.post("/events/x", USER)(handler)
    with pytest.raises(ValueError, match="one handler, one access"):
        routes.post("/events/y", READ_ONLY)(handler)


def test_the_access_check_lets_public_routes_through_and_refuses_a_route_that_declares_nothing(client_keys):
    from aiohttp import web
    from fedmisp.node.api.access import access_middleware
    from fedmisp.node.api.app import json_errors_middleware
    from fedmisp.node.api.helpers import CTX
    node, writer, _keys = client_keys

    async def health_and_undeclared() -> list[tuple[int, str]]:
        async with TestClient(TestServer(_node_app(node, writer))) as client:
            out = []
            # PUBLIC: no key; ANY_KEY_UNLESS_OPEN and PEER_SIGNATURE: the handler decides
            for method, path, headers in (("GET", "/node/v1/health", {}),
                                          ("GET", "/node/v1/metrics", {"Authorization": _keys[READ_ONLY]}),
                                          ("POST", "/fed/v1/notify", {})):
                async with client.request(method, path, headers=headers) as response:
                    out.append((response.status, await response.text()))

        async def undeclared(request):
            return web.json_response({"served": True})
        # an application without the start-up check: the middleware alone still refuses the route
        bare = web.Application(middlewares=[json_errors_middleware, access_middleware])
        bare[CTX] = ApiContext(node, writer)
        bare.router.add_get("/undeclared", undeclared)
        async with TestClient(TestServer(bare)) as client:
            async with client.get("/undeclared", headers={"Authorization": _keys[ADMIN]}) as response:
                out.append((response.status, await response.text()))
        return out
    (health, health_text), (metrics, _), (peer, peer_text), (status, text) = asyncio.run(health_and_undeclared())
    assert health == 200 and '"ok"' in health_text
    assert metrics == 200
    assert peer in (401, 403) and "declares no access" not in peer_text  # the peer protocol's own refusal
    assert status == 403 and "declares no access" in text and "served" not in text


def test_operator_routes_take_an_admin_key_or_a_fresh_request_signed_by_the_node_itself(client_keys):
    from fedmisp.gossip.auth import HEADER, sign_request
    from fedmisp.model.identity import Identity
    node, writer, keys = client_keys
    path = "/node/v1/peers"
    own = sign_request(node.identity, "GET", path, b"")
    cases = [({}, 403), ({"Authorization": keys[USER]}, 403), ({"Authorization": keys[ADMIN]}, 200),
             ({HEADER: own}, 200), ({HEADER: own}, 403),  # the same signed request again: a replay
             ({HEADER: sign_request(Identity.generate(), "GET", path, b"")}, 403),
             ({HEADER: sign_request(node.identity, "GET", "/node/v1/feeds", b"")}, 403)]  # signed for another path

    async def answers() -> list[tuple[int, str]]:
        async with TestClient(TestServer(_node_app(node, writer))) as client:
            out = []
            for headers, _status in cases:
                async with client.get(path, headers=headers) as response:
                    out.append((response.status, await response.text()))
            return out
    got = asyncio.run(answers())
    assert [status for status, _text in got] == [status for _headers, status in cases]
    assert all("admin API key" in text for status, text in got if status == 403)


async def _json(node, writer, method: str, path: str, key: str, body: dict | None = None) -> tuple[int, dict]:
    async with TestClient(TestServer(make_app(ApiContext(node, writer)))) as client:
        async with client.request(method, path, json=body,
                                  headers={"Accept": "application/json", "Authorization": key}) as r:
            return r.status, await r.json()


@pytest.mark.parametrize("role, published", [(USER, False), (PUBLISHER, True), (ADMIN, True)])
def test_events_add_publishes_only_for_a_key_that_may_publish(
        client_keys, role, published):
    # A user's key adds events but publishing is what shares them: `published: true` from a key
    # below publisher is kept unpublished (node/api/helpers.py may), as MISP does for a user
    # without perm_publish; a publisher's key publishes at once.
    node, writer, keys = client_keys
    status, answer = asyncio.run(_json(node, writer, "POST", "/events/add", keys[role],
                                            {"Event": {"info": f"published by {role}?", "published": True,
                                                       "distribution": 1}}))
    assert status == 200, answer
    assert answer["Event"]["published"] is published
    stored = node.store.export_event(answer["Event"]["uuid"])
    assert stored is not None and stored["Event"]["published"] is published


@pytest.mark.parametrize("role, sights", [(READ_ONLY, False), (USER, True), (ADMIN, True)])
def test_get_version_says_perm_sighting_only_for_a_key_that_may_add_sightings(client_keys, role, sights):
    # PyMISP and MISP's sync read perm_sighting from servers/getVersion to decide whether to send
    # sightings; a read-only key may not add them
    node, writer, keys = client_keys
    status, answer = asyncio.run(_json(node, writer, "GET", "/servers/getVersion", keys[role]))
    assert status == 200 and answer["perm_sighting"] is sights


def test_a_sync_key_calls_only_misp_sync_routes_and_only_while_its_peer_is_configured(client_keys):
    """A MISP peer's sync key (node/api/misp_sync.py): every route of the node without a sync view
    refuses it (admin routes, the analyst API's edits, operator endpoints, feeds, metrics), the
    sync views answer it, and once its peer is gone from fedmisp.toml nothing does."""
    import dataclasses
    import uuid

    from fedmisp.gossip.http import PEER_SIGNATURE
    from fedmisp.node.api.access import declared, sync_view
    from fedmisp.node.misp_config import MispPeer
    node, writer, _keys = client_keys
    original = node.config
    node.config = dataclasses.replace(original, misp_peers=(
        MispPeer("misp-x", "http://127.0.0.1:9", org_uuid=str(uuid.uuid4())),))
    key = node.create_api_key("sync", "test", peer="misp-x")
    try:
        routes = [r for r in _node_app(node, writer).router.routes() if r.method != "HEAD"]
        # (the peer protocol's routes read no API key: a peer's signature decides them)
        plain = [(r.method, _concrete(r.resource.canonical)) for r in routes
                 if sync_view(r.handler) is None and declared(r.handler) != PEER_SIGNATURE]
        answers = asyncio.run(_answers_app(_node_app(node, writer), [(m, p, {"Authorization": key}) for m, p in plain]))
        let_through = [(m, p, status) for (m, p), (status, text) in zip(plain, answers)
                       if status != 403 or ("sync key" not in text and "Authentication failed" not in text)]
        assert let_through == []
        assert "/admin/organisations/add" in {p for _m, p in plain} and "/events/delete/1" in {p for _m, p in plain}
        [(status, text)] = asyncio.run(_answers(node, writer, [("GET", "/servers/getVersion", {"Authorization": key})]))
        assert status == 200 and '"perm_sync": true' in text
        node.config = original  # the peer removed: its key opens nothing
        [(status, text)] = asyncio.run(_answers(node, writer, [("GET", "/servers/getVersion", {"Authorization": key})]))
        assert status == 403 and "no longer configured" in text
    finally:
        node.config = original

