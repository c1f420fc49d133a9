"""MISP's galaxies and their clusters, as a MISP instance holds them after `galaxies/update`, read
from the field's own package (pymispgalaxies: the misp-galaxy repository's data and its loader).

A cluster is put on an event or an attribute as its tag, `misp-galaxy:<type>="<value>"` (MISP's
`tag_name`), and that tag is all a revision carries: the `Galaxy` blocks of an event view are
derived from the tags when the event is shown (node/api/render.py), and the `Galaxy` blocks of an
imported event become tags (model/misp.py, which needs only the tag helpers here). Nothing about
galaxies is stored or signed (decision 0027).

pymispgalaxies reads about 45,000 clusters from 40 MB of JSON: about 2 s and 175 MB. So the
catalogue is read once per process, on first use (`catalogue()`, under a lock: store reads and
handlers run in a thread pool), never when this module is imported, and never on the paths that
do not show galaxies (node start-up, imports, the peer protocol).

What MISP does on `galaxies/update` (app/Model/Galaxy.php), and so what a cluster here is: each
value of a cluster file is a cluster of the galaxy of the file's type; its `tag_name` is built from
the type and the value; its version, source, authors and collection uuid are the file's; each meta
entry is one element per value, as text (a nested list or map is skipped); each `related` entry is
a relation with its tags. Custom clusters of these galaxies are signed records (model/clusters.py:
`as_cluster` reads one as a `Cluster` with its `Custom` part); custom galaxies are not made here.
"""
from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any, Iterable

CLUSTER_TAG_PREFIX = "misp-galaxy:"


def cluster_tag(galaxy_type: str, value: str) -> str:
    """A cluster's tag, as MISP names it: `misp-galaxy:threat-actor="APT1"`."""
    return f'{CLUSTER_TAG_PREFIX}{galaxy_type}="{value}"'


def is_cluster_tag(name: str) -> bool:
    return name.startswith(CLUSTER_TAG_PREFIX)


@dataclass(frozen=True, slots=True)
class Galaxy:
    uuid: str
    type: str
    name: str
    description: str
    version: int
    icon: str
    namespace: str
    kill_chain_order: dict[str, Any] | None


@dataclass(frozen=True, slots=True)
class Collection:
    """A cluster file: what its clusters share (MISP copies it onto each cluster)."""
    uuid: str
    name: str
    source: str
    authors: tuple[str, ...]
    version: int
    category: str


@dataclass(frozen=True, slots=True)
class Relation:
    """A cluster's `related` entry: the cluster it points at, how, and the relation's tags."""
    dest_uuid: str
    type: str
    tags: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Custom:
    """What a custom cluster (an organisation's signed record, model/clusters.py) has that a
    default one has not."""
    tag_name: str  # misp-galaxy:<type>="<uuid>"
    version: int
    distribution: int
    sharing_group_uuid: str | None
    published: bool
    deleted: bool
    orgc_uuid: str
    orgc_name: str
    extends_uuid: str | None
    extends_version: int | None


@dataclass(frozen=True, slots=True)
class Cluster:
    galaxy: Galaxy
    collection: Collection
    uuid: str
    value: str
    description: str
    # MISP's GalaxyElements: (key, value) pairs in the file's order, values as text
    elements: tuple[tuple[str, str], ...]
    related: tuple[Relation, ...]
    custom: Custom | None = None  # None: a default cluster of the package

    @property
    def type(self) -> str:
        return self.galaxy.type

    @property
    def tag_name(self) -> str:
        return self.custom.tag_name if self.custom is not None else cluster_tag(self.galaxy.type, self.value)

    @property
    def version(self) -> int:
        return self.custom.version if self.custom is not None else self.collection.version

    def meta(self) -> dict[str, list[str]]:
        """The elements by key, as MISP's event views show a cluster's `meta`."""
        out: dict[str, list[str]] = {}
        for key, value in self.elements:
            out.setdefault(key, []).append(value)
        return out


class Catalogue:
    """Every galaxy and cluster pymispgalaxies ships, with the look-ups the API needs. Galaxies are
    in order of type, clusters in order of galaxy type then value; a cluster uuid that two galaxies
    share (MITRE's deprecated galaxies repeat their successors' clusters) finds both, the first in
    that order first."""

    def __init__(self, galaxies: Iterable[Galaxy], clusters: Iterable[Cluster]):
        self.galaxies: tuple[Galaxy, ...] = tuple(sorted(galaxies, key=lambda g: g.type))
        self.clusters: tuple[Cluster, ...] = tuple(sorted(clusters, key=lambda c: (c.galaxy.type, c.value)))
        self._galaxy_by_uuid = {g.uuid: g for g in self.galaxies}
        self._by_galaxy: dict[str, list[Cluster]] = {g.uuid: [] for g in self.galaxies}
        self._by_uuid: dict[str, list[Cluster]] = {}
        # MISP finds a tag's cluster by name in a case-insensitive column (MySQL's collation)
        self._by_tag: dict[str, Cluster] = {}
        self._targeting: dict[str, list[tuple[Cluster, Relation]]] = {}
        for c in self.clusters:
            self._by_galaxy[c.galaxy.uuid].append(c)
            self._by_uuid.setdefault(c.uuid, []).append(c)
            self._by_tag.setdefault(c.tag_name.lower(), c)
            for r in c.related:
                self._targeting.setdefault(r.dest_uuid, []).append((c, r))

    def galaxy(self, uuid: str) -> Galaxy | None:
        return self._galaxy_by_uuid.get(uuid.lower())

    def clusters_of(self, galaxy: Galaxy) -> list[Cluster]:
        return self._by_galaxy.get(galaxy.uuid, [])

    def by_uuid(self, uuid: str) -> list[Cluster]:
        return self._by_uuid.get(uuid.lower(), [])

    def by_tag(self, tag_name: str) -> Cluster | None:
        return self._by_tag.get(tag_name.lower())

    def targeting(self, uuid: str) -> list[tuple[Cluster, Relation]]:
        """The relations of other clusters that point at the cluster `uuid` (MISP's TargetingClusterRelation)."""
        return self._targeting.get(uuid, [])


def _text(value: Any) -> str:
    """A meta value as MISP stores an element, (string)$v in PHP: true is "1", false and null ""."""
    if value is True:
        return "1"
    if value is False or value is None:
        return ""
    return str(value)


def _elements(meta: dict[str, Any]) -> tuple[tuple[str, str], ...]:
    out = []
    for key, value in meta.items():
        for v in value if isinstance(value, list) else [value]:
            if not isinstance(v, (list, dict)):  # MISP logs a nested array as malformed and skips it
                out.append((key, _text(v)))
    return tuple(out)


def _load() -> Catalogue:
    from pymispgalaxies import Clusters, Galaxies  # here, not at import: its import is cheap, its load is not

    galaxies = {}
    for g in Galaxies().values():
        galaxies[g.type] = Galaxy(uuid=g.uuid.lower(), type=g.type, name=g.name, description=g.description or "",
                                  version=int(g.version), icon=g.icon or "", namespace=g.namespace or "misp",
                                  kill_chain_order=g.kill_chain_order or None)
    clusters = []
    # skip_duplicates: a value twice in one file is one cluster (MISP keys a galaxy's clusters by value)
    for file in Clusters(skip_duplicates=True).values():
        galaxy = galaxies.get(file.type)
        if galaxy is None:  # MISP skips a cluster file whose galaxy it does not know
            continue
        collection = Collection(uuid=file.uuid, name=file.name, source=file.source or "",
                                authors=tuple(sorted(file.authors)), version=int(file.version or 0),
                                category=file.category or "")
        for v in file.values():
            if not v.uuid:
                continue  # MISP finds clusters by uuid; the schema requires one
            related = tuple(Relation(r["dest-uuid"], r.get("type", ""), tuple(r.get("tags") or ()))
                            for r in v.related if isinstance(r, dict) and r.get("dest-uuid"))
            clusters.append(Cluster(galaxy=galaxy, collection=collection, uuid=v.uuid.lower(), value=v.value,
                                    description=v.description or "",
                                    elements=_elements(v.meta.to_dict()) if v.meta else (), related=related))
    return Catalogue(galaxies.values(), clusters)


_lock = threading.Lock()
_catalogue: Catalogue | None = None


def catalogue() -> Catalogue:
    """The galaxies and clusters, read on the first call in this process (seconds; see above)."""
    global _catalogue
    if _catalogue is None:
        with _lock:
            if _catalogue is None:
                _catalogue = _load()
    return _catalogue


def loaded() -> bool:
    """Whether this process has read the catalogue (the tests check what does not)."""
    return _catalogue is not None
