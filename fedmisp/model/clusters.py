"""Custom galaxy clusters (MISP's GalaxyCluster that an organisation makes, `default: false`) as
signed records of their own kind (model/records.py KIND_CLUSTER, decision 0031).

A record's body is one version of one cluster:

  {uuid, galaxy_uuid, type, value, description, tag_name, version (MISP's integer version: a later
   one replaces an earlier), distribution (0-4), sharing_group_uuid (with 4 only), published,
   deleted, authors [text], source, orgc_uuid, orgc_name, elements [[key, value]],
   relations [{referenced_galaxy_cluster_uuid, referenced_galaxy_cluster_type, tags [text]}],
   extends_uuid, extends_version (a fork: the cluster and version it was made from, or null)}

`tag_name` is MISP's for a custom cluster, `misp-galaxy:<type>="<uuid>"` (GalaxyCluster::saveCluster),
so the tag names one cluster whatever its value becomes. The galaxy is one of the galaxies this
node ships (pymispgalaxies); custom galaxies are not made here. `cluster_problem` is the shape a
receiver checks (no catalogue look-up: it costs seconds, and nodes may ship different
pymispgalaxies versions); `checked_cluster` is what the API builds from a post, naming the field.
"""
from __future__ import annotations

import uuid as uuidlib
from typing import Any

from fedmisp.model.galaxies import CLUSTER_TAG_PREFIX, Cluster, Collection, Custom, Galaxy, Relation

MAX_TEXT = 65_535  # MISP's text columns
MAX_NAME = 255  # varchar(255): type, value, source, element keys
MAX_ITEMS = 10_000  # elements, relations, authors, a relation's tags: far above any cluster seen


class ClusterError(ValueError):
    """A cluster that does not validate; the message starts with the field it names."""

    def __init__(self, field: str, message: str):
        self.field = field
        super().__init__(f"{field}: {message}")


def custom_tag(galaxy_type: str, cluster_uuid: str) -> str:
    """A custom cluster's tag, as MISP names it: `misp-galaxy:<type>="<uuid>"`."""
    return f'{CLUSTER_TAG_PREFIX}{galaxy_type}="{cluster_uuid}"'


def _uuid(value: Any, field: str) -> str:
    if not isinstance(value, str):
        raise ClusterError(field, f"{value!r}; expected a uuid")
    try:
        parsed = uuidlib.UUID(value)
    except ValueError:
        raise ClusterError(field, f"{value!r}; expected a uuid") from None
    if str(parsed) != value:
        raise ClusterError(field, f"{value!r}; expected a uuid in lower-case hyphenated form")
    return value


def _text(value: Any, field: str, limit: int = MAX_TEXT) -> str:
    if not isinstance(value, str):
        raise ClusterError(field, f"{value!r}; expected text")
    if len(value) > limit:
        raise ClusterError(field, f"{len(value)} characters; at most {limit} accepted")
    return value


def _int(value: Any, field: str, low: int, high: int) -> int:
    if value.__class__ is not int or not low <= value <= high:
        raise ClusterError(field, f"{value!r}; expected an integer from {low} to {high}")
    return value


def _bool(value: Any, field: str) -> bool:
    if value.__class__ is not bool:
        raise ClusterError(field, f"{value!r}; expected true or false")
    return value


def _list(value: Any, field: str) -> list[Any]:
    if not isinstance(value, list):
        raise ClusterError(field, f"{value!r}; expected a list")
    if len(value) > MAX_ITEMS:
        raise ClusterError(field, f"{len(value)} items; at most {MAX_ITEMS} accepted")
    return value


FIELDS = ("uuid", "galaxy_uuid", "type", "value", "description", "tag_name", "version", "distribution",
          "sharing_group_uuid", "published", "deleted", "authors", "source", "orgc_uuid", "orgc_name",
          "elements", "relations", "extends_uuid", "extends_version")
MAX_VERSION = 2**63 - 1  # MISP's version is an int column holding a Unix time


def check_body(body: Any) -> dict[str, Any]:
    """A cluster version as signed, checked field by field (ClusterError naming the first wrong one)."""
    if not isinstance(body, dict):
        raise ClusterError("cluster", "expected an object")
    missing = [f for f in FIELDS if f not in body]
    if missing:
        raise ClusterError(f"cluster.{missing[0]}", "missing")
    extra = sorted(set(body) - set(FIELDS))
    if extra:
        raise ClusterError(f"cluster.{extra[0]}", "not a field of a galaxy cluster")
    _uuid(body["uuid"], "cluster.uuid")
    _uuid(body["galaxy_uuid"], "cluster.galaxy_uuid")
    type_ = _text(body["type"], "cluster.type", MAX_NAME)
    if not type_ or '"' in type_:
        raise ClusterError("cluster.type", f"{type_!r}; expected a galaxy type")
    if not _text(body["value"], "cluster.value", MAX_NAME).strip():
        raise ClusterError("cluster.value", "empty; expected the cluster's name")
    _text(body["description"], "cluster.description")
    if body["tag_name"] != custom_tag(type_, body["uuid"]):
        raise ClusterError("cluster.tag_name", f"{body['tag_name']!r}; expected {custom_tag(type_, body['uuid'])!r}")
    _int(body["version"], "cluster.version", 1, MAX_VERSION)
    distribution = _int(body["distribution"], "cluster.distribution", 0, 4)
    group = body["sharing_group_uuid"]
    if distribution == 4:
        _uuid(group, "cluster.sharing_group_uuid")
    elif group is not None:
        raise ClusterError("cluster.sharing_group_uuid", "only with distribution 4; expected null")
    _bool(body["published"], "cluster.published")
    _bool(body["deleted"], "cluster.deleted")
    for i, author in enumerate(_list(body["authors"], "cluster.authors")):
        _text(author, f"cluster.authors[{i}]", MAX_NAME)
    _text(body["source"], "cluster.source", MAX_NAME)
    _uuid(body["orgc_uuid"], "cluster.orgc_uuid")
    _text(body["orgc_name"], "cluster.orgc_name", MAX_NAME)
    for i, element in enumerate(_list(body["elements"], "cluster.elements")):
        if not isinstance(element, list) or len(element) != 2:
            raise ClusterError(f"cluster.elements[{i}]", f"{element!r}; expected [key, value]")
        if not _text(element[0], f"cluster.elements[{i}].key", MAX_NAME):
            raise ClusterError(f"cluster.elements[{i}].key", "empty; expected a key such as synonyms")
        _text(element[1], f"cluster.elements[{i}].value")
    for i, relation in enumerate(_list(body["relations"], "cluster.relations")):
        where = f"cluster.relations[{i}]"
        if not isinstance(relation, dict) or set(relation) != {"referenced_galaxy_cluster_uuid",
                                                               "referenced_galaxy_cluster_type", "tags"}:
            raise ClusterError(where, "expected {referenced_galaxy_cluster_uuid, referenced_galaxy_cluster_type, tags}")
        _uuid(relation["referenced_galaxy_cluster_uuid"], f"{where}.referenced_galaxy_cluster_uuid")
        if not _text(relation["referenced_galaxy_cluster_type"], f"{where}.referenced_galaxy_cluster_type", MAX_NAME):
            raise ClusterError(f"{where}.referenced_galaxy_cluster_type", "empty; expected a relation such as similar")
        for j, tag in enumerate(_list(relation["tags"], f"{where}.tags")):
            if not _text(tag, f"{where}.tags[{j}]", MAX_NAME):
                raise ClusterError(f"{where}.tags[{j}]", "empty; expected a tag name")
    if body["extends_uuid"] is None:
        if body["extends_version"] is not None:
            raise ClusterError("cluster.extends_version", "only with extends_uuid; expected null")
    else:
        _uuid(body["extends_uuid"], "cluster.extends_uuid")
        if body["extends_version"] is not None:
            _int(body["extends_version"], "cluster.extends_version", 0, MAX_VERSION)
    return body


def cluster_problem(body: Any) -> str | None:
    """What is wrong with a received cluster record's body (None: nothing)."""
    try:
        check_body(body)
    except ClusterError as e:
        return str(e)
    return None


def as_cluster(body: dict[str, Any], galaxy: Galaxy | None) -> Cluster:
    """A held version as the views read clusters. `galaxy`: the catalogue's galaxy of its
    `galaxy_uuid`, or None (a peer's pymispgalaxies ships a galaxy this node's does not): then a
    galaxy named after its type stands in."""
    if galaxy is None:
        galaxy = Galaxy(uuid=body["galaxy_uuid"], type=body["type"], name=body["type"], description="", version=0,
                        icon="", namespace="misp", kill_chain_order=None)
    collection = Collection(uuid="", name="", source=body["source"], authors=tuple(body["authors"]),
                            version=body["version"], category="")
    custom = Custom(tag_name=body["tag_name"], version=body["version"], distribution=body["distribution"],
                    sharing_group_uuid=body["sharing_group_uuid"], published=body["published"],
                    deleted=body["deleted"], orgc_uuid=body["orgc_uuid"], orgc_name=body["orgc_name"],
                    extends_uuid=body["extends_uuid"], extends_version=body["extends_version"])
    related = tuple(Relation(r["referenced_galaxy_cluster_uuid"], r["referenced_galaxy_cluster_type"], tuple(r["tags"]))
                    for r in body["relations"])
    return Cluster(galaxy=galaxy, collection=collection, uuid=body["uuid"], value=body["value"],
                   description=body["description"], elements=tuple((k, v) for k, v in body["elements"]),
                   related=related, custom=custom)
