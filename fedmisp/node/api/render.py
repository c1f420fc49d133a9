"""MISP JSON out, with this node's numeric ids (decision 0005): events as events/view shows them,
attributes with their event, the proposals an event view carries, event reports, tags, and galaxies
and clusters (the `Galaxy` blocks an event view derives from its cluster tags, decision 0027)."""
from __future__ import annotations

from hashlib import blake2b
from typing import Any, Iterable, Mapping

from fedmisp.correlate.engine import Correlator
from fedmisp.model.clusters import as_cluster
from fedmisp.model.galaxies import Cluster, Galaxy, Relation, catalogue, is_cluster_tag
from fedmisp.model.misp import misp_attribute
from fedmisp.node.api.helpers import ApiContext
from fedmisp.store import query
from fedmisp.store.proposals import HeldProposal, open_proposals
from fedmisp.store.query import element_id


def number_event(event: dict[str, Any], event_id: int, include_deleted: bool = False) -> dict[str, Any]:
    """Add MISP's numeric ids (event id; 56-bit element ids, decision 0005); drop soft-deleted
    attributes and objects unless asked for them (MISP's events/view default)."""
    e = event["Event"]
    eid = str(event_id)
    e["id"] = eid
    e.pop("deleted", None)

    def attribute(a: dict[str, Any], object_id: str) -> dict[str, Any]:
        a["id"] = str(element_id(a["uuid"]))
        a["event_id"] = eid
        a["object_id"] = object_id
        return a
    e["Attribute"] = [attribute(a, "0") for a in e["Attribute"] if include_deleted or not a.get("deleted")]
    objects = []
    for o in e["Object"]:
        if o.get("deleted") and not include_deleted:
            continue
        oid = str(element_id(o["uuid"]))
        o["id"] = oid
        o["event_id"] = eid
        o["Attribute"] = [attribute(a, oid) for a in o["Attribute"] if include_deleted or not a.get("deleted")]
        for r in o["ObjectReference"]:
            r["object_id"] = oid
            r["event_id"] = eid
        objects.append(o)
    e["Object"] = objects
    if "EventReport" in e:
        reports = [report_json(event_id, r, numbered=True) for r in e["EventReport"]
                   if include_deleted or not r.get("deleted")]
        if reports:
            e["EventReport"] = reports
        else:
            del e["EventReport"]
    with_sharing_group_ids(e)
    return event


_ANALYST = ("Note", "Opinion", "Relationship")


def with_sharing_group_ids(event: dict[str, Any]) -> dict[str, Any]:
    """Give everything at distribution 4 in a MISP JSON map (an event, attribute, report or analyst
    item, with what it nests) the sharing_group_id this node answers the group to (sharingGroups/
    index's id): PyMISP refuses to read a level-4 event, attribute, object, report or analyst item
    without one."""
    def number(m: dict[str, Any]) -> None:
        sg = m.get("sharing_group_uuid")
        if str(m.get("distribution")) == "4" and isinstance(sg, str):
            m["sharing_group_id"] = str(element_id(sg))
        for key in _ANALYST:
            for item in m.get(key) or ():
                number(item)
    number(event)
    for a in event.get("Attribute") or ():
        number(a)
    for o in event.get("Object") or ():
        number(o)
        for a in o.get("Attribute") or ():
            number(a)
    for r in event.get("EventReport") or ():
        number(r)
    return event


def report_json(event_id: int, report: dict[str, Any], *, numbered: bool = False) -> dict[str, Any]:
    """An event report as MISP shows it: with its numeric id and its event's; `numbered`: the
    report is already MISP JSON (to_misp's), otherwise it is the element body."""
    out = dict(report) if numbered else {k: v for k, v in report.items() if k != "extra"}
    if not numbered:
        out.update(report.get("extra") or {})
        out["distribution"] = str(report["distribution"])
        out["timestamp"] = str(report["timestamp"])
    out["id"] = str(element_id(report["uuid"]))
    out["event_id"] = str(event_id)
    return with_sharing_group_ids(out)


def shown_event(ctx: ApiContext, event_uuid: str, include_deleted: bool = False, metadata: bool = False,
                correlations: bool = False, galaxies: bool = True) -> dict[str, Any] | None:
    held = ctx.store.held(event_uuid)
    event = ctx.store.export_event(event_uuid)
    if held is None or event is None or event["Event"].get("deleted"):  # a tombstone (decision 0007)
        return None
    meta = ctx.store.event_meta(event_uuid)
    if meta is not None and meta.correlation_only:
        return None  # matched by correlation, never shown (issue 5)
    event = number_event(event, held.id, include_deleted)
    number_proposals(ctx, event)
    if correlations:
        # MISP's RelatedEvent and RelatedAttribute, computed now from the indexes (decision 0006)
        Correlator(ctx.store, ctx.node.config.correlation).annotate(event)
    if metadata:
        event["Event"].pop("Attribute", None)
        event["Event"].pop("Object", None)
    if galaxies:
        with_galaxies(event, ctx)
    return event


def attribute_json(head: query.EventHead, body: dict[str, Any], local: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    a = misp_attribute(body, {body["uuid"]: local} if local else {})
    a["id"] = str(element_id(body["uuid"]))
    a["event_id"] = str(head.id)
    a["object_id"] = str(element_id(body["object_uuid"])) if "object_uuid" in body else "0"
    if "object_uuid" in body:
        a["object_uuid"] = body["object_uuid"]
    h = head.header
    a["Event"] = {"id": str(head.id), "uuid": head.uuid, "info": h["info"], "distribution": str(h["distribution"]),
                  "orgc_id": "0", "Orgc": h["Orgc"], "published": h["published"], "date": h["date"]}
    return with_sharing_group_ids(a)


def shown_attribute(ctx: ApiContext, element_uuid: str) -> dict[str, Any] | None:
    found = query.find_element(ctx.store, element_uuid)
    if found is None:
        return None
    head = query.event_head(ctx.store, found[0])
    if head is None:
        return None
    local = ctx.store.local_tags([element_uuid]).get(element_uuid)
    a = attribute_json(head, found[1], local)
    a.pop("Event")
    return a


def proposal_json(ctx: ApiContext, head: query.EventHead, held: HeldProposal) -> dict[str, Any]:
    """A proposal as MISP's ShadowAttribute: ids as strings, `old_id` the attribute it changes."""
    body = held.body
    org = body.get("Org") or {}
    target = body.get("attribute_uuid")
    out = {
        "id": str(held.id), "old_id": str(element_id(target)) if target else "0", "event_id": str(head.id),
        "type": body["type"], "category": body["category"], "value": body["value"],
        "comment": body.get("comment", ""), "to_ids": bool(body.get("to_ids")), "uuid": body["uuid"],
        "event_uuid": held.event_uuid,
        "event_org_id": "1" if head.author == ctx.node.identity.public_key else "0",
        "org_id": "1" if org.get("uuid") == ctx.node.config.org_uuid else "0",
        "org_uuid": org.get("uuid", ""), "email": "", "deleted": False, "timestamp": str(body["timestamp"]),
        "proposal_to_delete": bool(body.get("proposal_to_delete")),
        "disable_correlation": bool(body.get("disable_correlation")),
        "first_seen": body.get("first_seen"), "last_seen": body.get("last_seen"),
        "Org": {"name": org.get("name", ""), "uuid": org.get("uuid", "")},
    }
    if target:
        out["old_uuid"] = target
    return out


def _proposal_key(proposal: dict[str, Any]) -> tuple[Any, ...]:
    return (proposal["uuid"], proposal.get("attribute_uuid"), str(proposal["timestamp"]), proposal["type"],
            proposal["value"])


def number_proposals(ctx: ApiContext, event: dict[str, Any]) -> None:
    """MISP's ids (id, event_id, old_id) on the proposals an event view shows, on the event (new
    attributes) and on its attributes (changes and deletions)."""
    e = event["Event"]
    attributes = [*e.get("Attribute", ()), *(a for o in e.get("Object", ()) for a in o["Attribute"])]
    shown = [*e.get("ShadowAttribute", ()), *(p for a in attributes for p in a.get("ShadowAttribute", ()))]
    if not shown:
        return
    ids: dict[tuple[Any, ...], list[int]] = {}
    for held in open_proposals(ctx.store, e["uuid"]):
        ids.setdefault(_proposal_key(held.body), []).append(held.id)
    for proposal in shown:
        found = ids.get(_proposal_key(proposal))
        if found:
            target = proposal.get("attribute_uuid")
            proposal.update(id=str(found.pop(0)), event_id=e["id"],
                            old_id=str(element_id(target)) if target else "0")


# --- ids derived from names and uuids ------------------------------------------------------------------

# 56 bits, as element ids (decision 0005); sent as strings
HASHED_ID_BYTES = 7


def hashed_id(*parts: str) -> int:
    """A 56-bit id from the BLAKE2b of `parts` (joined by NUL): the same on every node, nothing
    stored. Tags are numbered from their name; galaxies from their uuid and clusters from their
    galaxy's uuid and their own (decision 0027: uuid prefixes clash there)."""
    return int.from_bytes(blake2b("\0".join(parts).encode(), digest_size=HASHED_ID_BYTES).digest(), "big")


def name_id(name: str) -> str:
    """The 56-bit id of something that exists by its name (a tag, a taxonomy, a warninglist):
    the same on every node and across restarts, with nothing stored (decision 0005)."""
    return str(hashed_id(name))


tag_id = name_id


def tag_json(name: str, settings: dict[str, Any] | None = None) -> dict[str, Any]:
    """A tag as MISP shows it, with this node's settings for it if any."""
    settings = settings or {}
    return {"id": tag_id(name), "name": name,
            "colour": settings.get("colour") or "#" + blake2b(name.encode(), digest_size=3).hexdigest(),
            "exportable": settings.get("exportable", True), "hide_tag": settings.get("hide_tag", False),
            "local_only": False, "org_id": "0", "user_id": "0", "is_galaxy": is_cluster_tag(name),
            "is_custom_galaxy": False, "numerical_value": None}


def galaxy_id(galaxy: Galaxy) -> str:
    return str(hashed_id(galaxy.uuid))


def cluster_id(cluster: Cluster) -> str:
    return str(hashed_id(cluster.galaxy.uuid, cluster.uuid))


# --- galaxies and clusters, as MISP's galaxies and galaxy_clusters rows -------------------------------

# What MISP shows for the organisation of a default cluster (Organisation::GENERIC_MISP_ORGANISATION)
MISP_ORGANISATION = {"id": "0", "name": "MISP", "date_created": "", "date_modified": "",
                     "description": "Automatically generated MISP organisation", "type": "",
                     "nationality": "Not specified", "sector": "", "created_by": "0", "uuid": "0", "contacts": "",
                     "local": True, "restricted_to_domain": [], "landingpage": None}


def galaxy_json(galaxy: Galaxy) -> dict[str, Any]:
    """A galaxy as MISP's galaxies row (every galaxy of the package is enabled, none local-only)."""
    out: dict[str, Any] = {"id": galaxy_id(galaxy), "uuid": galaxy.uuid, "name": galaxy.name, "type": galaxy.type,
                           "description": galaxy.description, "version": str(galaxy.version), "icon": galaxy.icon,
                           "namespace": galaxy.namespace, "enabled": True, "local_only": False}
    if galaxy.kill_chain_order:
        out["kill_chain_order"] = galaxy.kill_chain_order
    return out


def _org_id(org_uuid: str, own_org: str | None) -> str:
    return "1" if org_uuid == own_org else str(element_id(org_uuid))  # (as helpers.org_id numbers orgs)


def cluster_json(cluster: Cluster, own_org: str | None = None) -> dict[str, Any]:
    """A cluster as MISP's galaxy_clusters row: a default cluster (distribution 3, organisation 0,
    not published, never deleted), as MISP's `galaxies/update` makes it; a custom one (decision
    0031) with its own version, distribution, organisation and state. `own_org`: this node's
    organisation (numbered 1)."""
    c = cluster.custom
    if c is not None:
        orgc = _org_id(c.orgc_uuid, own_org)
        sg = c.sharing_group_uuid if c.distribution == 4 else None
        return {"id": cluster_id(cluster), "uuid": cluster.uuid, "collection_uuid": "", "type": cluster.type,
                "value": cluster.value, "tag_name": cluster.tag_name, "description": cluster.description,
                "galaxy_id": galaxy_id(cluster.galaxy), "source": cluster.collection.source,
                "authors": list(cluster.collection.authors), "version": str(c.version),
                "distribution": str(c.distribution), "sharing_group_id": str(element_id(sg)) if sg else None,
                "org_id": orgc, "orgc_id": orgc, "default": False, "locked": False,
                "extends_uuid": c.extends_uuid or "", "extends_version": str(c.extends_version or 0),
                "published": c.published, "deleted": c.deleted}
    return {"id": cluster_id(cluster), "uuid": cluster.uuid, "collection_uuid": cluster.collection.uuid,
            "type": cluster.type, "value": cluster.value, "tag_name": cluster.tag_name,
            "description": cluster.description, "galaxy_id": galaxy_id(cluster.galaxy),
            "source": cluster.collection.source, "authors": list(cluster.collection.authors),
            "version": str(cluster.collection.version), "distribution": "3", "sharing_group_id": None,
            "org_id": "0", "orgc_id": "0", "default": True, "locked": False, "extends_uuid": "",
            "extends_version": "0", "published": False, "deleted": False}


def cluster_elements(cluster: Cluster) -> list[dict[str, str]]:
    """MISP's GalaxyElement rows of a cluster, numbered by position."""
    cid = cluster_id(cluster)
    return [{"id": str(hashed_id(cluster.galaxy.uuid, cluster.uuid, "element", str(i))), "galaxy_cluster_id": cid,
             "key": key, "value": value} for i, (key, value) in enumerate(cluster.elements)]


def _relation_json(found: Any, source: Cluster, relation: Relation) -> dict[str, Any]:
    targets = found.by_uuid(relation.dest_uuid)
    c = source.custom
    level = str(c.distribution) if c is not None else "3"
    sg = c.sharing_group_uuid if c is not None and c.distribution == 4 else None
    return {"id": str(hashed_id(source.galaxy.uuid, source.uuid, "relation", relation.dest_uuid, relation.type)),
            "galaxy_cluster_id": cluster_id(source),
            "referenced_galaxy_cluster_id": cluster_id(targets[0]) if targets else "0",
            "referenced_galaxy_cluster_uuid": relation.dest_uuid,
            "referenced_galaxy_cluster_type": relation.type, "galaxy_cluster_uuid": source.uuid,
            "distribution": level, "sharing_group_id": str(element_id(sg)) if sg else None, "default": c is None,
            "Tag": [tag_json(name) for name in relation.tags]}


def full_cluster_json(found: Any, cluster: Cluster, own_org: str | None = None) -> dict[str, Any]:
    """`{"GalaxyCluster": …}` as galaxy_clusters/view and restSearch answer it: the row with its
    galaxy, elements, relations both ways and organisations nested in it (MISP's arrangeData;
    a default cluster's are the generic MISP organisation). `found`: what looks clusters up by
    uuid and by what targets them (the catalogue, or node/api/galaxies.py's Clusters)."""
    out = cluster_json(cluster, own_org)
    out["tag_id"] = tag_id(cluster.tag_name)
    out["Galaxy"] = galaxy_json(cluster.galaxy)
    out["GalaxyElement"] = cluster_elements(cluster)
    out["GalaxyClusterRelation"] = [_relation_json(found, cluster, r) for r in cluster.related]
    c = cluster.custom
    org = {"id": _org_id(c.orgc_uuid, own_org), "name": c.orgc_name, "uuid": c.orgc_uuid} if c is not None \
        else MISP_ORGANISATION
    out["Org"] = org
    out["Orgc"] = org
    targeting = [_relation_json(found, source, r) for source, r in found.targeting(cluster.uuid)]
    if targeting:
        out["TargetingClusterRelation"] = targeting
    return {"GalaxyCluster": out}


def galaxy_blocks(tags: Iterable[dict[str, Any]], custom: Mapping[str, Cluster] | None = None,
                  own_org: str | None = None) -> list[dict[str, Any]]:
    """MISP's `Galaxy` list for an event's or attribute's tags: per galaxy, the clusters whose tags
    these are (a tag that names no cluster is only a tag, as in MISP). Each cluster has its
    `meta`, its tag's id, and whether the tag is local (Event::__attachGalaxies). `custom`: the
    custom clusters this node holds, not deleted, by lower-cased tag name (decision 0031)."""
    blocks: dict[str, dict[str, Any]] = {}
    for tag in tags:
        if not is_cluster_tag(tag["name"]):
            continue
        cluster = (custom or {}).get(tag["name"].lower()) or catalogue().by_tag(tag["name"])
        if cluster is None:
            continue
        block = blocks.get(cluster.galaxy.uuid)
        if block is None:
            block = blocks[cluster.galaxy.uuid] = {**galaxy_json(cluster.galaxy), "GalaxyCluster": []}
        block["GalaxyCluster"].append({**cluster_json(cluster, own_org), "meta": cluster.meta(), "tag_id": tag_id(tag["name"]),
                                       "local": bool(tag.get("local")),
                                       "relationship_type": tag.get("relationship_type") or False})
    return list(blocks.values())


def custom_clusters(ctx: ApiContext) -> dict[str, Cluster]:
    """The custom clusters this node holds and shows on events (not deleted), by lower-cased tag."""
    out: dict[str, Cluster] = {}
    records = ctx.store.clusters()
    if records:
        found = catalogue()
        for record, _, _ in records:
            if not record.body["deleted"]:
                cluster = as_cluster(record.body, found.galaxy(record.body["galaxy_uuid"]))
                out[cluster.tag_name.lower()] = cluster
    return out


def with_galaxies(event: dict[str, Any], ctx: ApiContext | None = None) -> None:
    """Put `Galaxy` blocks on a shown event and on each of its attributes (object members too)
    that carries cluster tags. The catalogue and the custom clusters are read only when some tag
    is a cluster tag."""
    e = event["Event"]
    attributes = [*e.get("Attribute", ()), *(a for o in e.get("Object", ()) for a in o.get("Attribute", ()))]
    custom: dict[str, Cluster] | None = None
    for item in (e, *attributes):
        if any(is_cluster_tag(t["name"]) for t in item.get("Tag", ())):
            if custom is None:
                custom = custom_clusters(ctx) if ctx is not None else {}
            blocks = galaxy_blocks(item["Tag"], custom, ctx.node.config.org_uuid if ctx is not None else None)
            if blocks:
                item["Galaxy"] = blocks


def known_tags(ctx: ApiContext) -> dict[str, dict[str, Any]]:
    """name -> settings of every tag this node knows (in use or added), by name."""
    settings = ctx.store.tag_settings()
    return {name: settings.get(name, {}) for name in sorted(set(query.tag_names(ctx.store)) | set(settings))}
