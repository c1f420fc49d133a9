"""Reason codes: every decision carries one; metrics and the audit log count them by this name.

The one vocabulary of refusals, wherever they are decided: the policy pipeline (policy/inbound.py,
policy/outbound.py), the pull session (gossip/session.py), the store's write (store/store.py), the
peer request check (gossip/auth.py) and the pull's own limits. A value is what the wire, the audit
log and the metrics show; it never changes (tests pin them). Nowhere else is a reason a string.
"""
from __future__ import annotations

from enum import StrEnum


class Reason(StrEnum):
    ALLOWED = "allowed"

    # outbound 1: node-local data never leaves
    LOCAL_UNPUBLISHED = "local-unpublished"
    LOCAL_CORRELATION_ONLY = "local-correlation-only"
    PEER_MODE = "peer-mode"  # the peer's mode forbids this direction
    INTERNAL_ORG_MISMATCH = "internal-org-mismatch"  # an internal peer of another organisation
    # outbound 2: hop budget
    HOP_BUDGET = "hop-budget"
    PARENT_WITHHELD = "parent-withheld"  # its object or event does not pass
    # outbound 3 / inbound 2: sharing groups
    SG_UNKNOWN = "sg-unknown"
    SG_NOT_MEMBER = "sg-not-member"  # the peer's org is not in the group's current revision
    SG_RELAY_NOT_MEMBER = "sg-relay-not-member"  # this node's org is not: it never relays the group's data
    SG_SENDER_NOT_MEMBER = "sg-sender-not-member"  # inbound: a non-member sent the group's data
    # outbound 4 / inbound 3: filters
    PUSH_FILTER_TAG = "push-filter-tag"
    PUSH_FILTER_ORG = "push-filter-org"
    PUSH_FILTER_TYPE = "push-filter-type"
    PUSH_FILTER_TEMPLATE = "push-filter-template"
    PUSH_FILTER_TLP = "push-filter-tlp"
    PUSH_FILTER_PAP = "push-filter-pap"
    PUSH_FILTER_TO_IDS = "push-filter-to-ids"
    PUSH_FILTER_AGE = "push-filter-age"
    PUSH_FILTER_DISTRIBUTION = "push-filter-distribution"
    PULL_FILTER_TAG = "pull-filter-tag"
    PULL_FILTER_ORG = "pull-filter-org"
    PULL_FILTER_TYPE = "pull-filter-type"
    PULL_FILTER_TEMPLATE = "pull-filter-template"
    PULL_FILTER_TLP = "pull-filter-tlp"
    PULL_FILTER_PAP = "pull-filter-pap"
    PULL_FILTER_TO_IDS = "pull-filter-to-ids"
    PULL_FILTER_AGE = "pull-filter-age"
    PULL_FILTER_DISTRIBUTION = "pull-filter-distribution"
    BLOCKLIST_EVENT = "blocklist-event"
    BLOCKLIST_ORG = "blocklist-org"
    # outbound 5
    FROM_PEER = "from-peer"
    # sightings and proposals follow their event: a node that does not hold it neither sends nor keeps them
    EVENT_NOT_HELD = "event-not-held"
    # inbound 1
    MALFORMED = "malformed"
    TOO_LARGE = "too-large"
    BAD_SIGNATURE = "bad-signature"
    BAD_DIGEST = "bad-digest"
    UNKNOWN_AUTHOR = "unknown-author"
    KEY_BLOCKED = "key-blocked"  # signed by (or introducing, or vouched by) a key in [blocklist] keys
    DECISION_NOT_CREATOR = "decision-not-creator"  # a proposal decision not signed by the event's creator
    # inbound 4
    OLDER = "older"  # a revision before the one held (timestamp, then record id), or one its author retracted
    # a revision of a held event signed by a key other than its author's; an analyst-data item not
    # signed for the org it names as its creator, or editing another org's item (decision 0029)
    NOT_AUTHOR = "not-author"
    # a revision of an event that came from a MISP peer, by any other path; or a MISP peer's revision
    # of an event that did not come from it (policy/inbound.py bridge_reason, decision 0032)
    NOT_BRIDGE = "not-bridge"
    UUID_CONFLICT = "uuid-conflict"  # an element uuid belongs to another held event (MISP keeps them unique)
    # sharing group revisions
    SG_REVISION_NOT_NEWER = "sg-revision-not-newer"
    SG_REVISION_AUTHOR = "sg-revision-author"
    SG_REVISION_OWNER_CHANGED = "sg-revision-owner-changed"
    SG_REVISION_OWNER_REMOVED = "sg-revision-owner-removed"
    SG_REVISION_EXTEND_REMOVES = "sg-revision-extend-removes"
    # published object templates (policy/templates.py, decision 0030)
    TEMPLATE_NOT_NEWER = "template-not-newer"  # a version not above the one held
    TEMPLATE_OTHER_ORG = "template-other-org"  # a version signed for another org than the template's
    TEMPLATE_NOT_HELD = "template-not-held"  # an object names a template this node does not hold (yet)
    # custom galaxy clusters (policy/clusters.py, decision 0031)
    CLUSTER_NOT_NEWER = "cluster-not-newer"  # a version not above the one held
    CLUSTER_OTHER_ORG = "cluster-other-org"  # signed by, or naming, another org than the cluster's creator
    CLUSTER_BLOCKED = "cluster-blocked"  # a cluster uuid this node hard-deleted (MISP's cluster blocklist)
    # org records (policy/orgs.py)
    ORG_KEY_NOT_CURRENT = "org-key-not-current"  # a rotation not signed by a current key of the org
    ORG_KEY_CONFLICT = "org-key-conflict"  # a key that already signs for another organisation
    ORG_KEY_RETIRED = "org-key-retired"  # a retired key introduced again, or signing after its rotation
    # a new key introducing itself for an organisation that has a key already, without that key's vouch
    ORG_KEY_NOT_VOUCHED = "org-key-not-vouched"
    # a whole pull ended by its peer (gossip/session.py: the pull's limits, a reply refused whole)
    PULL_DEADLINE = "deadline"
    PULL_NO_PROGRESS = "no-progress"
    REFUSED_REPLY = "refused-reply"
    # a peer request refused before it is read (gossip/auth.py; gossip/http.py answers 401, 403 or 429)
    # (a header that does not parse is MALFORMED, a signature that does not verify BAD_SIGNATURE)
    AUTH_MISSING = "missing"  # no Fedmisp-Auth header
    UNKNOWN_KEY = "unknown-key"  # not a configured peer's key
    STALE = "stale"  # the request's time is too far from this node's clock
    REPLAY = "replay"  # a nonce seen before
    TOO_MANY = "too-many"  # the key's nonce window is full
    BAD_BOX = "bad-box"  # the body does not decrypt between the two keys


# filter check name -> (push reason, pull reason)
FILTER_REASONS = {
    "tag": (Reason.PUSH_FILTER_TAG, Reason.PULL_FILTER_TAG),
    "org": (Reason.PUSH_FILTER_ORG, Reason.PULL_FILTER_ORG),
    "type": (Reason.PUSH_FILTER_TYPE, Reason.PULL_FILTER_TYPE),
    "template": (Reason.PUSH_FILTER_TEMPLATE, Reason.PULL_FILTER_TEMPLATE),
    "tlp": (Reason.PUSH_FILTER_TLP, Reason.PULL_FILTER_TLP),
    "pap": (Reason.PUSH_FILTER_PAP, Reason.PULL_FILTER_PAP),
    "to_ids": (Reason.PUSH_FILTER_TO_IDS, Reason.PULL_FILTER_TO_IDS),
    "age": (Reason.PUSH_FILTER_AGE, Reason.PULL_FILTER_AGE),
    "distribution": (Reason.PUSH_FILTER_DISTRIBUTION, Reason.PULL_FILTER_DISTRIBUTION),
}
