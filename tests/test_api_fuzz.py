"""Every route of the REST API answers bad input with a MISP-shaped 4xx and stores nothing.

The routes are read from the application's own router (`make_app`), so a route added later is
fuzzed too, with generic bad input until someone gives it a valid seed body in SEEDS. Each route
gets generated requests, sent to one real `fedmisp run` process on 127.0.0.1 with an API key of a
drawn role: wrong JSON types in each field of a valid body, nested junk, huge and non-finite
numbers, lone surrogates (escaped in JSON, percent-encoded in paths and query strings), bytes
that are not UTF-8, empty bodies, wrong content types and bad path ids. Required of every answer:
never a 5xx and never a hang (each request has a timeout); a 4xx is MISP-shaped and a 400 names
the field (`errors` is a map of field to messages); after any 4xx every database of the node's
store is byte for byte what it was (log head, stats, node-local tags and settings included).

Time: about 10 generated requests per route (aliases of one handler share the handler's budget),
so the module runs in about a minute on a loaded 2-core machine; it needs no `.hypothesis`
cache (the too_slow health check is not what this test is about: the node, not the generator,
sets the pace).
"""
from __future__ import annotations

import hashlib
import json
import re
import uuid as _uuid
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator
from urllib.parse import quote

import pytest
import requests
from hypothesis import HealthCheck, given, settings, strategies as st

from factories import ORG, event as factory_event
from nodes import NodeProcess, free_port
from fedmisp.model.identity import Identity
from fedmisp.model.misp import ImportDefaults, parse_event
from fedmisp.model.revision import sign_event
from fedmisp.node.api.app import make_app
from fedmisp.node.api.helpers import ApiContext
from fedmisp.node.api.render import hashed_id
from fedmisp.node.home import ROLES, init_home
from fedmisp.store.store import Store

MAX_REQUEST_BYTES = 64 * 1024  # small, so an oversized body is cheap to send (413)
# Requests per handler: enough to have found each of the 500s of issue 13 on every run tried
# (30 runs, all found) while the module stays near a minute.
EXAMPLES_PER_HANDLER = 12
MIN_EXAMPLES_PER_ROUTE = 4
REQUEST_TIMEOUT = (5, 30)  # connect, read: a request that takes longer is a hang


# --- the routes, from the application itself ----------------------------------------------------------

@dataclass(frozen=True)
class Route:
    method: str
    canonical: str  # "/events/view/{ref}"
    pattern: re.Pattern[str] | None  # the resource's regex (None: a plain path)
    handler: str  # module.function: aliases (x.json, HEAD) share one

    @property
    def params(self) -> dict[str, str]:
        """Each placeholder's own regex (aiohttp's default `[^{}/]+` unless the route gives one)."""
        return _groups(self.pattern.pattern) if self.pattern is not None else {}

    @property
    def controller(self) -> str:
        return self.canonical.strip("/").split("/")[0].replace("_", "").lower()

    def __str__(self) -> str:
        return f"{self.method} {self.canonical}"


def _groups(pattern: str) -> dict[str, str]:
    out = {}
    for m in re.finditer(r"\(\?P<(\w+)>", pattern):
        depth, i = 1, m.end()
        while depth:
            depth += {"(": 1, ")": -1}.get(pattern[i], 0)
            i += 1
        out[m.group(1)] = pattern[m.end():i - 1]
    return out


def api_routes() -> list[Route]:
    app = make_app(ApiContext(node=None, writer=None))  # type: ignore[arg-type]  (only its router is read)
    routes = []
    for r in app.router.routes():
        info = r.resource.get_info()
        routes.append(Route(r.method, r.resource.canonical, info.get("pattern"),
                            f"{r.handler.__module__}.{r.handler.__name__}"))
    return routes


ROUTES = api_routes()
_ALIASES = Counter(r.handler for r in ROUTES)


def examples_for(route: Route) -> int:
    return max(MIN_EXAMPLES_PER_ROUTE, EXAMPLES_PER_HANDLER // _ALIASES[route.handler])


# --- the node and what the requests aim at -------------------------------------------------------------

@dataclass
class Fuzzed:
    url: str
    keys: dict[str, str]
    home: Path
    process: NodeProcess
    store: Store
    foreign: dict[str, str]
    targets: dict[str, str]

    def send(self, method: str, path: str, data: bytes | None, content_type: str | None,
             role: str | None) -> requests.Response:
        headers = {"Accept": "application/json"}
        if role is not None:
            headers["Authorization"] = self.keys[role]
        if content_type is not None:
            headers["Content-Type"] = content_type
        return requests.request(method, self.url + path, data=data, headers=headers, timeout=REQUEST_TIMEOUT,
                                allow_redirects=False)

    def call(self, method: str, path: str, body: Any = None) -> Any:
        response = self.send(method, path, None if body is None else json.dumps(body).encode(), "application/json",
                             "admin")
        assert response.status_code == 200, (path, response.text)
        return response.json()

    def snapshot(self) -> str:
        """A digest of every database of the node's store (read-only, beside the running node)."""
        digest = hashlib.blake2b(digest_size=16)
        with self.store.database.env.begin() as txn:
            for name in sorted(self.store.database.db):
                if self.store.database.db[name] is None:
                    continue
                digest.update(name.encode() + b"\0")
                for key, value in txn.cursor(db=self.store.database.db[name]):
                    digest.update(len(key).to_bytes(4, "big") + key + len(value).to_bytes(4, "big") + value)
        return digest.hexdigest()

    def describe(self) -> str:
        return f"head {self.store.head_sequence()}, stats {self.store.stats()}"

    def alive(self) -> bool:
        """Whether every target still answers (a valid request may have deleted one)."""
        checks = [f"/events/view/{self.targets['event_uuid']}", f"/attributes/view/{self.targets['attribute_uuid']}",
                  f"/objects/view/{self.targets['object_uuid']}", f"/sharingGroups/view/{self.targets['sg_uuid']}",
                  f"/tags/view/{quote(self.targets['tag_name'], safe='')}",
                  f"/shadowAttributes/view/{self.targets['proposal_id']}",
                  f"/events/view/{self.foreign['event_uuid']}"]
        return all(self.send("GET", path, None, None, "admin").status_code == 200 for path in checks)

    def make_targets(self) -> None:
        """A fresh event of this node with attributes, an object and a reference; a proposal on it;
        a sharing group, a tag and an introduced organisation."""
        n = _uuid.uuid4().hex[:8]
        event = self.call("POST", "/events/add", {"Event": {
            "info": f"fuzz target {n}", "distribution": 1, "published": True, "Tag": [{"name": "tlp:green"}],
            "Attribute": [{"type": "ip-dst", "value": f"198.51.100.{int(n, 16) % 250}", "to_ids": True,
                           "Tag": [{"name": "fuzz:attribute"}]},
                          {"type": "domain", "value": f"{n}.fuzz.example", "comment": "second"}],
            "Object": [{"name": "domain-ip", "Attribute": [
                {"object_relation": "domain", "type": "domain", "value": f"o{n}.fuzz.example"},
                {"object_relation": "ip", "type": "ip-dst", "value": "203.0.113.9"}]}]}})["Event"]
        attribute = event["Attribute"][0]
        obj = event["Object"][0]
        reference = self.call("POST", "/objectReferences/add", {
            "object_uuid": obj["uuid"], "referenced_uuid": attribute["uuid"], "relationship_type": "related-to"})
        proposal = self.call("POST", f"/shadowAttributes/add/{event['id']}",
                             {"type": "comment", "value": f"proposed {n}"})
        self.call("POST", "/tags/attachTagToObject", {"uuid": event["uuid"], "tag": "fuzz:local", "local": 1})
        group = self.call("POST", "/sharingGroups/add", {"name": f"fuzz group {n}", "releasability": "fuzz"})
        tag = self.call("POST", "/tags/add", {"name": f"fuzz:tag-{n}", "colour": "#102030"})
        org_uuid = str(_uuid.uuid4())
        org = self.call("POST", "/admin/organisations/add", {"Organisation": {
            "name": f"Fuzz Org {n}", "uuid": org_uuid, "public_key": Identity.generate().public_key_text}})
        self.targets = {
            "event_id": event["id"], "event_uuid": event["uuid"], "attribute_id": attribute["id"],
            "attribute_uuid": attribute["uuid"], "attribute_value": attribute["value"], "object_id": obj["id"],
            "object_uuid": obj["uuid"], "member_uuid": obj["Attribute"][0]["uuid"],
            "reference_uuid": reference["ObjectReference"]["uuid"],
            "proposal_id": proposal["ShadowAttribute"]["id"], "proposal_uuid": proposal["ShadowAttribute"]["uuid"],
            "sg_id": group["SharingGroup"]["id"], "sg_uuid": group["SharingGroup"]["uuid"],
            "tag_name": tag["Tag"]["name"], "tag_id": tag["Tag"]["id"], "org_id": org["Organisation"]["id"],
            "org_uuid": org_uuid, "org_name": org["Organisation"]["name"], "node_org_id": "1",
            **GALAXY_TARGETS, **TEMPLATE_TARGETS,
        }

    def ref(self, name: str) -> str:
        return self.foreign[name[len("foreign_"):]] if name.startswith("foreign_") else self.targets[name]


@pytest.fixture(scope="module")
def fuzzed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fuzzed]:
    home = tmp_path_factory.mktemp("fuzz") / "node"
    port = free_port()
    node, admin = init_home(home, "Fuzz CSIRT", f"127.0.0.1:{port}")
    keys = {role: node.create_api_key(role, f"fuzz {role}") for role in ROLES}
    keys["admin"] = admin
    other = Identity.generate()  # an event another organisation's node signed, held as a peer delivers it
    foreign = factory_event(seed=7, attributes=2, objects=0)["Event"]
    node.store.write_events([sign_event(other, parse_event(foreign, ImportDefaults(org_uuid=ORG["uuid"],
                                                                                   org_name=ORG["name"])))])
    node.close()
    config = home / "fedmisp.toml"
    config.write_text(config.read_text().replace("[limits]\n", f"[limits]\nmax_request_bytes = {MAX_REQUEST_BYTES}\n"))
    process = NodeProcess("fuzz", home, port)
    process.start()
    store = Store(home / "store", readonly=True)
    try:
        f = Fuzzed(f"http://127.0.0.1:{port}", keys, home, process, store, {}, {})
        held = f.call("GET", f"/events/view/{foreign['uuid']}")["Event"]
        f.foreign = {"event_id": held["id"], "event_uuid": held["uuid"], "attribute_id": held["Attribute"][0]["id"],
                     "attribute_uuid": held["Attribute"][0]["uuid"]}
        f.make_targets()
        yield f
    finally:
        store.close()
        process.stop()


# --- generated input ---------------------------------------------------------------------------------------

SURROGATES = ["\ud800", "\udfff", "a\udbff", "\udc80z"]
text = st.one_of(st.text(max_size=16), st.sampled_from(SURROGATES),
                 st.text(st.characters(exclude_categories=()), max_size=6),  # surrogates included
                 st.sampled_from(["", " ", "0", "-1", "1e400", "null", "%", "!x", "*", "\x00", "x" * 300]))
numbers = st.one_of(st.integers(-2**70, 2**70), st.sampled_from([2**63, 2**64, -2**63 - 1, 10**30]),
                    st.floats(), st.sampled_from([float("inf"), float("-inf"), float("nan"), 1e308, -0.0]))
scalars = st.one_of(st.none(), st.booleans(), numbers, text)
junk = st.recursive(scalars, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(text, inner, max_size=3),
                    max_leaves=8)

# Field names the API reads somewhere: a generic body uses them, so a route without a seed still
# gets values of the wrong type in the fields it looks at.
FIELDS = sorted({
    "Event", "Attribute", "Object", "Tag", "ObjectReference", "Organisation", "SharingGroup", "SharingGroupOrg",
    "ShadowAttribute", "request", "type", "category", "value", "values", "sort", "direction", "desc", "limit",
    "page", "uuid", "id", "event_id", "info", "name", "colour", "exportable", "hide_tag", "tag", "local",
    "context", "org_id", "org_uuid", "sg_id", "sg_uuid", "extend", "hard", "deleted", "returnFormat",
    "timestamp", "publish_timestamp", "from", "to", "last", "source", "distribution", "sharing_group_id",
    "sharing_group_uuid", "to_ids", "comment", "object_uuid", "object_id", "referenced_uuid", "relationship_type",
    "public_key", "releasability", "published", "minimal", "eventinfo", "tags", "eventid", "org", "attribute",
    "all", "threatlevel", "analysis", "datefrom", "dateuntil", "searchall", "scope", "first_seen", "last_seen",
    "object_relation", "template_uuid", "template_version", "breakOnDuplicate", "includeCorrelations",
    "enforceWarninglist", "includeWarninglistHits", "metadata", "event_timestamp", "includeAttribute",
    "includeEvent", "proposal_to_delete", "disable_correlation", "Orgc", "date", "threat_level_id",
})


# MISP's threat-actor galaxy and its APT1 cluster, by id (derived from the uuids: render.py) and uuid
GALAXY_TARGETS = {
    "galaxy_uuid": "698774c7-8022-42c4-917f-8d6e4f06ada3", "cluster_uuid": "1cb7e1cc-d695-42b1-92f4-fd0112a3c9be",
    "galaxy_id": str(hashed_id("698774c7-8022-42c4-917f-8d6e4f06ada3")),
    "cluster_id": str(hashed_id("698774c7-8022-42c4-917f-8d6e4f06ada3", "1cb7e1cc-d695-42b1-92f4-fd0112a3c9be")),
}

# misp-objects' shipped domain-ip template, by id (render.py hashed_id of its uuid), uuid and name
TEMPLATE_TARGETS = {
    "template_uuid": "43b3b146-77eb-4931-b4cc-b66c60f28734", "template_name": "domain-ip",
    "template_id": str(hashed_id("object-template", "43b3b146-77eb-4931-b4cc-b66c60f28734")),
}


def _attr(**fields: Any) -> dict[str, Any]:
    return {"type": "ip-dst", "category": "Network activity", "value": "192.0.2.44", "to_ids": False,
            "comment": "fuzz", **fields}


# Valid bodies per handler path (aliases map onto these: x.json, sharing_groups, shadow_attributes);
# "{name}" is replaced by the current target of that name. Mutations of these reach past the
# first checks into each handler.
SEEDS: dict[str, list[Any]] = {
    "/events/index": [{"eventinfo": "fuzz", "sort": "timestamp", "direction": "desc", "limit": 5, "page": 1},
                      {"minimal": 1, "published": 1, "tags": ["tlp:green", "!x"], "org": "Fuzz CSIRT",
                       "datefrom": "2020-01-01", "timestamp": ["0", "2000000000"], "threatlevel": [1, 2]}],
    "/events/view/{ref}": [{"deleted": 1}],
    "/events/add": [{"Event": {"info": "fuzz add", "distribution": 0, "threat_level_id": 2, "Tag": [{"name": "t:x"}],
                               "Attribute": [_attr(Tag=[{"name": "x:local", "local": True}])],
                               "Object": [{"name": "domain-ip", "Attribute": [
                                   {"object_relation": "domain", "type": "domain", "value": "add.fuzz.example"}]}]}}],
    "/events/edit/{ref}": [{"Event": {"info": "fuzz edit", "Attribute": [
        {"uuid": "{attribute_uuid}", "value": "192.0.2.45", "type": "ip-dst", "category": "Network activity"},
        _attr(value="192.0.2.46")]}}],
    "/events/delete/{ref}": [{}],
    "/events/restSearch{tail}": [{"value": "{attribute_value}", "type": "ip-dst", "limit": 10, "page": 1},
                                 {"tags": {"OR": ["tlp:green"], "NOT": ["x"]}, "returnFormat": "csv",
                                  "last": "7d", "to_ids": 1, "includeCorrelations": 1}],
    "/attributes/add/{ref}": [_attr(), [_attr(value="192.0.2.47"), _attr(type="domain", value="a.fuzz.example",
                                                                      category="Network activity")]],
    "/attributes/edit/{ref}": [{"Attribute": {"value": "192.0.2.48", "comment": "edited", "to_ids": True,
                                              "distribution": 0}}],
    "/attributes/delete/{ref}{hard}": [{"hard": 0}],
    "/attributes/restSearch{tail}": [{"value": "{attribute_value}", "returnFormat": "json", "limit": 3},
                                     {"type": ["ip-dst", "domain"], "returnFormat": "text", "eventid": "{event_id}",
                                      "enforceWarninglist": 1, "includeWarninglistHits": 1}],
    "/objects/add/{ref}{tail}": [{"Object": {"name": "domain-ip", "distribution": 5, "Attribute": [
        {"object_relation": "domain", "type": "domain", "value": "obj.fuzz.example"},
        {"object_relation": "ip", "type": "ip-dst", "value": "203.0.113.10"}]}}],
    "/objects/edit/{ref}": [{"Object": {"comment": "fuzz", "Attribute": [
        {"uuid": "{member_uuid}", "value": "edit.fuzz.example"},
        {"object_relation": "ip", "type": "ip-dst", "value": "203.0.113.11"}]}}],
    "/objects/delete/{ref}{hard}": [{"hard": 0}],
    "/objectReferences/add": [{"object_uuid": "{object_uuid}", "referenced_uuid": "{event_uuid}",
                               "relationship_type": "related-to", "comment": "fuzz"}],
    "/objectReferences/add/{ref}": [{"referenced_uuid": "{attribute_uuid}", "relationship_type": "related-to"}],
    "/admin/organisations/add": [{"Organisation": {"name": "Fuzz Added", "uuid": "8c3a4a3e-7f4e-4b5e-9d1a-0f5b1f2d3c4e",
                                                   "public_key": "A" * 43}}],
    "/sharingGroups/add": [{"SharingGroup": {"name": "fuzz add group", "releasability": "r", "SharingGroupOrg": [
        {"org_uuid": "{org_uuid}", "extend": 0}]}}],
    "/sharingGroups/edit/{ref}": [{"SharingGroup": {"name": "fuzz renamed", "releasability": "r2"}}],
    "/sharingGroups/addOrg": [{"sg_id": "{sg_id}", "org_id": "{org_id}", "extend": 1}],
    "/sharingGroups/removeOrg": [{"sg_id": "{sg_id}", "org_id": "{org_id}"}],
    "/shadowAttributes/add/{ref}": [{"ShadowAttribute": {"type": "comment", "category": "Other", "value": "proposal",
                                                         "to_ids": False, "comment": "c"}}],
    "/shadowAttributes/edit/{ref}": [{"ShadowAttribute": {"value": "192.0.2.99", "comment": "proposed"}}],
    "/shadowAttributes/index/{ref}/{opts}": [{}],
    "/sightings/add": [{"values": ["{attribute_value}"], "type": "1", "source": "fuzz"},
                       {"id": "{attribute_id}", "type": 0, "timestamp": 1700000000},
                       [{"uuid": "{attribute_uuid}", "type": "2"}]],
    "/sightings/add/{ref}": [{"type": "0", "source": "s"}],
    "/sightings/listSightings": [{"context": "event", "id": "{event_id}"}, {"context": "attribute",
                                                                          "id": "{attribute_uuid}", "org_id": "1"}],
    "/sightings/restSearch": [{"type": "0", "last": "1d", "source": "s", "limit": 5},
                              {"id": "{event_id}", "context": "event", "includeAttribute": 1, "includeEvent": 1}],
    "/tags/add": [{"Tag": {"name": "fuzz:added", "colour": "#010203", "exportable": 1, "hide_tag": 0}}],
    "/tags/attachTagToObject": [{"uuid": "{event_uuid}", "tag": "fuzz:attached", "local": 1},
                                {"uuid": "{attribute_uuid}", "tag": "{tag_name}", "local": 0}],
    "/tags/removeTagFromObject": [{"uuid": "{event_uuid}", "tag": "fuzz:local", "local": 1}],
    "/tags/edit/{ref}": [{"Tag": {"colour": "#aabbcc", "exportable": 0}}],
    "/tags/search": [{"tagname": "tlp:%", "strict_tagname": True}, {"Tag": {"tag": ["{tag_name}", "x%"]}}],
    "/warninglists/checkValue": [["8.8.8.8", "dns[.]google", "{attribute_value}"], {"Warninglist": ["8.8.8.8"]}],
    "/eventReports/add/{ref}": [{"EventReport": {"name": "fuzz report", "content": "# x", "distribution": 1}},
                                {"name": "n", "content": ""}],
    "/eventReports/edit/{ref}": [{"EventReport": {"content": "# edited"}}],
    "/eventReports/index{tail}": [{"event_id": "{event_id}"}, {"value": "fuzz"}],
    "/galaxies": [{"value": "threat actor"}],
    "/galaxies/index": [{"value": "actor", "enabled": 1}],
    "/objectTemplates/index": [{}],
    "/galaxy_clusters/index/{ref}": [{"context": "all", "searchall": "apt"}],
    "/galaxy_clusters/restSearch{tail}": [{"value": "APT1", "type": "threat-actor", "limit": 2, "page": 1},
                                          {"elements": {"synonyms": "comment crew"}, "minimal": 1,
                                           "eventid": "{event_id}", "galaxy_uuid": "{galaxy_uuid}"}],
    "/galaxy_clusters/add/{galaxy}{tail}": [{"GalaxyCluster": {"value": "Fuzz Bear", "description": "d",
                                                               "distribution": 1, "authors": "a, b",
                                                               "GalaxyElement": [{"key": "synonyms", "value": "FB"}]}},
                                            {"value": "x", "distribution": 4, "sharing_group_id": "{sg_id}"},
                                            {"value": "y", "elements": "[{\"key\": \"k\", \"value\": \"v\"}]"}],
    "/galaxy_clusters/edit/{ref}": [{"GalaxyCluster": {"value": "Edited", "distribution": 0}}],
    "/galaxy_clusters/delete/{ref}": [{"hard": 1}, {}],
    "/galaxies/attachCluster/{ref}{tail}": [{"Galaxy": {"target_id": "{cluster_id}"}},
                                            {"Galaxy": {"target_id": "{cluster_uuid}"}}],
    "/analyst_data/add/{type}/{object_uuid}/{object_type}": [{"Note": {"note": "fuzz note", "language": "en"}},
                                                            {"opinion": 50, "comment": "c"}],
    "/analyst_data/add/{type}": [{"Note": {"note": "n", "object_uuid": "{event_uuid}", "object_type": "Event"}}],
    "/analyst_data/edit/{type}/{ref}": [{"Note": {"note": "edited"}}, {"opinion": 10}],
    "/analyst_data/index/{type}": [{"uuid": "{event_uuid}"}, {"target_object": "{attribute_uuid}"}],
}
for path in ("/sightings/listSightings/{ref}", "/sightings/listSightings/{ref}/{context}"):
    SEEDS[path] = [{"org_id": "1"}]
SEEDS["/sightings/restSearch/{context}"] = SEEDS["/sightings/restSearch"]
SEEDS["/events/view/{ref}/{opts}"] = SEEDS["/events/view/{ref}"]
SEEDS["/events/add/{opts}"] = SEEDS["/events/add"]
SEEDS["/events/edit/{ref}/{opts}"] = SEEDS["/events/edit/{ref}"]
SEEDS["/attributes/add/{ref}/{opts}"] = SEEDS["/attributes/add/{ref}"]


def seeds_for(route: Route) -> list[Any]:
    path = route.canonical.replace("/sharing_groups/", "/sharingGroups/").replace("/shadow_attributes/",
                                                                                 "/shadowAttributes/")
    path = path.replace("/galaxyClusters/", "/galaxy_clusters/")
    return SEEDS.get(path.removesuffix(".json"), [])


# Which targets a path id names: by the longest matching path prefix, else by the placeholder's
# name; a route nothing here matches gets any of them.
EVENT_REFS = ["event_id", "event_uuid", "foreign_event_id", "foreign_event_uuid"]
REFS = {
    "/events/": EVENT_REFS,
    "/attributes/": ["attribute_id", "attribute_uuid", "member_uuid", "foreign_attribute_uuid"],
    "/attributes/add/": EVENT_REFS,
    "/objects/": ["object_id", "object_uuid"],
    "/objects/add/": EVENT_REFS,
    "/eventReports/add/": EVENT_REFS,
    "/objectReferences/": ["reference_uuid"],
    "/objectReferences/add/": ["object_uuid", "object_id"],
    "/shadowAttributes/": ["proposal_id", "proposal_uuid"],
    "/shadowAttributes/add/": ["event_id", "event_uuid", "foreign_event_uuid"],
    "/shadowAttributes/edit/": ["attribute_id", "attribute_uuid", "foreign_attribute_id"],
    "/shadowAttributes/delete/": ["attribute_id", "foreign_attribute_uuid"],
    "/shadowAttributes/index/": ["event_id", "event_uuid"],
    "/sharingGroups/": ["sg_id", "sg_uuid"],
    "/organisations/": ["org_id", "org_uuid", "org_name", "node_org_id"],
    "/tags/": ["tag_id", "tag_name"],
    "/sightings/": ["attribute_id", "attribute_uuid", "event_id"],
    "/sightings/listSightings/": ["attribute_id", "attribute_uuid", "event_id", "event_uuid"],
    "/galaxies/": ["galaxy_id", "galaxy_uuid"],
    "/galaxies/attachCluster/": [*EVENT_REFS, "attribute_id", "attribute_uuid"],
    "/galaxy_clusters/": ["cluster_id", "cluster_uuid"],
    "/galaxy_clusters/index/": ["galaxy_id", "galaxy_uuid"],
    "/galaxy_clusters/add/": ["galaxy_id", "galaxy_uuid"],
    "/objectTemplates/": ["template_id", "template_uuid", "template_name"],
}
NAMED_REFS = {"sg": ["sg_id", "sg_uuid"], "org": ["org_id", "org_uuid", "node_org_id"]}


def refs_for(route: Route, name: str) -> list[str]:
    if name in NAMED_REFS:
        return NAMED_REFS[name]
    path = route.canonical.replace("/sharing_groups/", "/sharingGroups/").replace("/shadow_attributes/",
                                                                                 "/shadowAttributes/")
    path = path.replace("/galaxyClusters/", "/galaxy_clusters/")
    prefixes = [p for p in REFS if path.startswith(p)]
    return REFS[max(prefixes, key=len)] if prefixes else ANY_REF


ANY_REF = sorted({name for names in [*REFS.values(), *NAMED_REFS.values()] for name in names})
# Path ids no node holds, or that are no id at all.
BAD_REFS = st.one_of(
    st.sampled_from(["0", "-1", "00001", str(2**64), str(2**70), "1e3", "1.json", "%FF", "%ED%A0%80", "%00",
                     "ffffffff-ffff-4fff-bfff-ffffffffffff", "FFFFFFFF-FFFF-4FFF-BFFF-FFFFFFFFFFFF", "x" * 600,
                     "%F0%9F%92%A9", "..", "null", "undefined", "[]", "true"]),
    st.uuids().map(str), st.integers(0, 2**80).map(str),
    st.text(st.characters(exclude_characters="/?#"), min_size=1, max_size=20).map(
        lambda s: quote(s.encode("utf-8", "surrogatepass"), safe="")))
# Values for placeholders with a regex of their own ({tail}, {hard}, {opts}, {context}).
TAILS = ["", "/1", "/0", "/true", "/false", "/returnFormat:csv", "/returnFormat:stix2/limit:1", "/limit:x",
         "/page:-1", "/breakOnDuplicate:1", "/" + "4d7c8a4e-2f3a-4b59-8a58-9d7b1c2e3f40", "/scope:all",
         "/searchall:%ED%A0%80", "/%FF", "/event", "/attribute", "/all", "/x:y:z", "//", "/returnFormat:%00"]
CONTENT_TYPES = ["application/json", "application/json", "application/json", None, "text/plain",
                 "application/x-www-form-urlencoded", "multipart/form-data; boundary=x",
                 "application/json; charset=latin-1", "application/xml"]
RAW_BODIES = [b"", b"   ", b"\xff\xfe\x00", b"{\"info\": \"\xed\xa0\x80\"}", b"{", b"[" * 5000, b"{}" * 3,
              b"\xef\xbb\xbf{}", b"\xff\xfe{\x00}\x00", b'{"limit": 1e999}', b'{"value": NaN}', b"[Infinity]",
              b'{"limit": ' + b"9" * 5000 + b"}", b'"\\ud800"', b"null", b"0", b"\x00", b'{"a": 1, "a": [1]}',
              b'{"Event": {"info": "\\udfff"}}', b'{"name": "\\ud83d"}', b'{"type": "\\ud800x"}',
              b"x" * (MAX_REQUEST_BYTES + 1)]


def _fill(value: Any, refs: dict[str, str]) -> Any:
    if isinstance(value, str):
        return re.sub(r"\{(\w+)\}", lambda m: refs.get(m.group(1), m.group(0)), value)
    if isinstance(value, list):
        return [_fill(v, refs) for v in value]
    if isinstance(value, dict):
        return {k: _fill(v, refs) for k, v in value.items()}
    return value


def _retyped(draw: st.DrawFn, value: Any) -> Any:
    return draw(st.sampled_from([[value], {"name": value}, [], {}, [[value]], None, True, 2**64, float("inf")]))


def _places(document: Any) -> Iterator[tuple[Any, Any]]:
    """(parent, key) of every value in `document`, the document itself as (None, None)."""
    stack: list[tuple[Any, Any]] = [(None, None)]
    while stack:
        parent, key = stack.pop()
        yield parent, key
        node = document if parent is None else parent[key]
        if isinstance(node, dict):
            stack.extend((node, k) for k in node)
        elif isinstance(node, list):
            stack.extend((node, i) for i in range(len(node)))


@st.composite
def mutated(draw: st.DrawFn, document: Any) -> Any:
    """`document` with one to three places changed: a value replaced by junk or by another JSON
    type, a lone surrogate put into a string, a field removed or added, a value wrapped."""
    document = json.loads(json.dumps(document))
    for _ in range(draw(st.integers(1, 3))):
        # every place of the document is as likely as any other: a field three levels down
        # (an attribute's type in an event) is reached as often as a top-level one
        parent, key = draw(st.sampled_from(list(_places(document))))
        node = document if parent is None else parent[key]
        action = draw(st.sampled_from(["junk", "retype", "retype", "surrogate", "surrogate", "remove", "add"]))
        if action == "add" and isinstance(node, dict):
            node[draw(st.sampled_from(FIELDS) | st.sampled_from(SURROGATES) | text)] = draw(junk)
            continue
        if action == "surrogate":
            if isinstance(node, str):
                at = draw(st.integers(0, len(node)))
                new = node[:at] + draw(st.sampled_from(SURROGATES)) + node[at:]
            else:
                new = draw(st.sampled_from(SURROGATES))
        elif action == "retype":
            new = _retyped(draw, node)
        elif action == "junk" or parent is None:
            new = draw(junk)
        else:  # remove
            del parent[key]
            continue
        if parent is None:
            document = new
        else:
            parent[key] = new
    return document


def generic() -> st.SearchStrategy[Any]:
    """A body for a route without a seed: the API's field names with values of any JSON type."""
    fields = st.dictionaries(st.sampled_from(FIELDS), junk, min_size=1, max_size=5)
    return st.one_of(fields, fields.map(lambda d: {"Event": d}), fields.map(lambda d: {"request": d}),
                     st.lists(fields, max_size=3), junk)


def encode_json(document: Any) -> bytes:
    """JSON as a careless client writes it: lone surrogates as \\u escapes, NaN and Infinity
    spelled as Python's json module spells them."""
    return json.dumps(document, ensure_ascii=True).encode("ascii")


@st.composite
def requests_for(draw: st.DrawFn, route: Route, fuzzed: Fuzzed) -> tuple[str, bytes | None, str | None, str | None]:
    refs = {**fuzzed.targets, **{f"foreign_{k}": v for k, v in fuzzed.foreign.items()}}
    path = route.canonical
    for name, regex in route.params.items():
        if regex == "[^{}/]+":  # an id
            kinds = refs_for(route, name)
            if draw(st.integers(0, 2)):
                value = quote(fuzzed.ref(draw(st.sampled_from(kinds))), safe="")
            else:
                value = draw(BAD_REFS)
            if name == "context" and draw(st.booleans()):
                value = draw(st.sampled_from(["event", "attribute", "all", "Event", ""])) or "x"
        else:
            compiled = re.compile(regex)
            choices = [t for t in TAILS if compiled.fullmatch(t)]
            value = draw(st.sampled_from(choices)) if choices and draw(st.booleans()) else quote(
                draw(st.from_regex(compiled, fullmatch=True)).encode("utf-8", "surrogatepass"), safe="/:")
        path = path.replace("{" + name + "}", value)
    if draw(st.integers(0, 3)) == 0:  # a query string (what GET handlers read), with junk in it
        params = draw(st.dictionaries(st.sampled_from(FIELDS), text, max_size=3))
        path += "?" + "&".join(f"{quote(k)}={quote(v.encode('utf-8', 'surrogatepass'), safe='')}"
                               for k, v in params.items())
    seeds = seeds_for(route)
    kind = draw(st.integers(0, 9))
    if kind == 0:
        data: bytes | None = draw(st.sampled_from(RAW_BODIES))
    elif kind == 1:
        data = None
    elif seeds and kind >= 4:
        data = encode_json(draw(mutated(_fill(draw(st.sampled_from(seeds)), refs))))
    else:
        data = encode_json(draw(generic()))
    content_type = draw(st.sampled_from(CONTENT_TYPES))
    role = draw(st.sampled_from(["admin"] * 6 + ["publisher", "user", "read-only", None]))
    return path, data, content_type, role


def check(route: Route, fuzzed: Fuzzed, path: str, data: bytes | None, content_type: str | None,
          role: str | None) -> None:
    before = fuzzed.snapshot()
    described = fuzzed.describe()
    response = fuzzed.send(route.method, path, data, content_type, role)
    sent = f"{route.method} {path} as {role}, {content_type}: {data[:300] if data else data!r}"
    assert response.status_code < 500, f"{sent}\n-> {response.status_code} {response.text[:1000]}"
    if response.status_code < 400:
        if route.method not in ("GET", "HEAD") and not fuzzed.alive():
            fuzzed.make_targets()  # a valid delete or edit took a target away: aim at new ones
        return
    if route.method != "HEAD":
        answer = response.json()
        assert answer["saved"] is False and {"name", "message", "url", "errors"} <= set(answer), (sent, answer)
        if response.status_code == 400:
            # a 400 names the field it refuses, and says what would be accepted
            assert isinstance(answer["errors"], dict) and answer["errors"], (sent, answer)
    after = fuzzed.snapshot()
    assert after == before, f"{sent}\n-> {response.status_code} {response.text[:500]}\nchanged the store: " \
                            f"before {described}, after {fuzzed.describe()}"


@pytest.mark.parametrize("route", ROUTES, ids=str)
def test_every_route_refuses_bad_input_with_a_4xx_and_stores_nothing(fuzzed: Fuzzed, route: Route):
    @settings(max_examples=examples_for(route), deadline=None, database=None,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much])
    @given(data=st.data())
    def run(data: st.DataObject) -> None:
        check(route, fuzzed, *data.draw(requests_for(route, fuzzed)))
    run()


def test_the_fuzzed_routes_are_all_the_routes_the_api_serves(fuzzed: Fuzzed):
    """The route list is the application's own, and the node serves each (no 404 from the router)."""
    assert len(ROUTES) == len(api_routes()) and len(ROUTES) > 100
    assert {r.handler.split(".")[-1] for r in ROUTES} >= {"event_add", "attribute_add", "tag_add", "sighting_add",
                                                           "object_add", "proposal_add", "sharing_group_add"}


# --- the malformed requests of issue 13 that answered 500, each pinned ---------------------------------------

LONE = "\ud800"
# (route, body): a lone surrogate in one stored string field of each endpoint that stores text, and
# the field the 400 must name.
NOT_TEXT = [
    ("/events/add", {"Event": {"info": LONE, "distribution": 0}}, "Event.info"),
    ("/events/add", {"Event": {"info": "ok", "Attribute": [_attr(comment="a" + LONE)]}}, "Event.Attribute[0].comment"),
    ("/events/edit/{event_id}", {"Event": {"info": LONE}}, "Event.info"),
    ("/attributes/add/{event_id}", _attr(comment=LONE), "comment"),
    ("/attributes/edit/{attribute_id}", {"Attribute": {"comment": LONE}}, "Attribute.comment"),
    ("/objects/add/{event_id}", {"Object": {"name": "domain-ip", "comment": LONE, "Attribute": [
        {"object_relation": "domain", "type": "domain", "value": "lone.fuzz.example"}]}}, "Object.comment"),
    ("/objects/edit/{object_id}", {"Object": {"comment": LONE}}, "Object.comment"),
    ("/objectReferences/add", {"object_uuid": "{object_uuid}", "referenced_uuid": "{event_uuid}",
                               "relationship_type": "related-to", "comment": LONE}, "comment"),
    ("/shadowAttributes/add/{event_id}", {"type": "comment", "value": "v", "comment": LONE}, "comment"),
    ("/shadowAttributes/edit/{attribute_id}", {"ShadowAttribute": {"value": LONE}}, "ShadowAttribute.value"),
    ("/sightings/add", {"values": ["{attribute_value}"], "source": LONE}, "source"),
    ("/tags/add", {"Tag": {"name": "fuzz:" + LONE}}, "Tag.name"),
    ("/tags/attachTagToObject", {"uuid": "{event_uuid}", "tag": LONE, "local": 1}, "tag"),
    ("/sharingGroups/add", {"SharingGroup": {"name": LONE, "releasability": "r"}}, "SharingGroup.name"),
    ("/sharingGroups/edit/{sg_id}", {"SharingGroup": {"releasability": LONE}}, "SharingGroup.releasability"),
    ("/admin/organisations/add", {"Organisation": {"name": LONE, "uuid": str(_uuid.uuid4()),
                                                   "public_key": "A" * 43}}, "Organisation.name"),
    ("/events/add", {"Event": {"info": "key", "Tag": [{LONE: "x"}]}}, "Event.Tag[0].\\ud800"),
]
# (route, body, field): values of a JSON type the handler read before anything checked them.
WRONG_TYPE = [
    ("/attributes/add/{event_id}", _attr(type=["ip-dst"]), "Attribute[0].type"),
    ("/attributes/add/{event_id}", _attr(category={"a": 1}), "Attribute[0].category"),
    ("/attributes/add/{event_id}", _attr(value=["192.0.2.1"]), "Attribute[0].value"),
    ("/attributes/add/{event_id}", [_attr(value={"v": 1})], "Attribute[0].value"),
    ("/events/index", {"sort": ["timestamp"]}, "sort"),
    ("/events/index", {"sort": {"timestamp": 1}}, "sort"),
    ("/sharingGroups/add", None, "body"),  # a number of 5,000 digits
]


def _refused(fuzzed: Fuzzed, path: str, data: bytes, field: str) -> None:
    before = fuzzed.snapshot()
    response = fuzzed.send("POST", _fill(path, fuzzed.targets), data, "application/json", "admin")
    assert response.status_code == 400, response.text
    answer = response.json()
    assert answer["saved"] is False and field in answer["errors"], answer
    said = " ".join(answer["errors"][field])
    assert "expected" in said or "accepted" in said, answer  # says what would be accepted
    assert fuzzed.snapshot() == before


@pytest.mark.parametrize("path, body, field", NOT_TEXT, ids=[f"{p} {f}" for p, _b, f in NOT_TEXT])
def test_a_lone_surrogate_in_a_stored_field_is_a_400_naming_the_field(fuzzed: Fuzzed, path: str, body: Any,
                                                                     field: str):
    _refused(fuzzed, path, encode_json(_fill(body, fuzzed.targets)), field)


@pytest.mark.parametrize("path, body, field", WRONG_TYPE, ids=[f"{p} {f}" for p, _b, f in WRONG_TYPE])
def test_a_field_of_the_wrong_json_type_is_a_400_naming_the_field(fuzzed: Fuzzed, path: str, body: Any, field: str):
    data = b'{"SharingGroup": {"name": ' + b"9" * 5000 + b"}}" if body is None else encode_json(body)
    _refused(fuzzed, path, data, field)


def test_zz_the_node_kept_serving_and_logged_no_internal_error(fuzzed: Fuzzed):
    assert fuzzed.process.proc is not None and fuzzed.process.proc.poll() is None
    assert fuzzed.send("GET", "/servers/getVersion", None, None, "read-only").status_code == 200
    log = fuzzed.process.log.read_text()
    assert "Traceback" not in log, log[log.index("Traceback") - 300:][:3000]
