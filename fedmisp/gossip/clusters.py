"""Custom galaxy clusters: sign and hold a version made here, take one from a peer.

A version is a record of its own kind (model/records.py KIND_CLUSTER, model/clusters.py), signed by
the node of its creator org; which version a node holds and where one goes are
policy/clusters.py's, applied in the store's write transaction (store/clusters.py) and by the
sender and receiver (decision 0031).
"""
from __future__ import annotations

from typing import Any

from fedmisp.model.clusters import check_body
from fedmisp.model.identity import Identity
from fedmisp.model.records import KIND_CLUSTER, Record, seal
from fedmisp.policy.reasons import Reason
from fedmisp.store.store import Store


def sign(store: Store, identity: Identity, body: dict[str, Any]) -> tuple[Reason, Record]:
    """Sign a version made here (its body checked: ClusterError naming the field) and hold it
    at its own distribution."""
    record = seal(identity, KIND_CLUSTER, dict(sorted(check_body(body).items())))
    return store.accept_cluster(record), record


def accept(store: Store, record: Record, level: int, source: str) -> Reason:
    """A version from `source` at `level` (its signer, shape and level checked by the receiver)."""
    return store.accept_cluster(record, level, source)
