"""Inbound: what this node takes from a peer (docs DESIGN "The pipeline at each hop").

For each record from a peer, in DESIGN's order:
  1. well-formed, within size limits, signature and digests valid (`check_received`, from what
     the record layer found), author key known and not blocked here (`key_known`, `author_reason`);
  2. the sender was allowed to send it (`inbound`: the levels offered against what the author
     signed, sharing-group membership of the sender);
  3. the node's pull filter for that peer and its blocklists (`inbound`);
  4. not older than what is held (`not_older`), and only the event's author revises it, retracts
     it or decides its proposals (`by_author`, decision 0017);
  5. a correlation-only peer's data feeds correlation alone (`inbound`).
Sightings, proposals and decisions are kept only with their event (`attached_inbound`), analyst
data with its event, signed for its creator org and at the level it may have (`analyst_inbound`); org
records, sharing-group revisions and retractions have their own rules (policy/orgs.py,
policy/sharing_groups.py, policy/retractions.py).

Every function is pure: the pull session, the receiver and the store gather the facts (a held
revision's timestamp, a key's state, the peer's org), call these and act on the Reason returned.
"""
from __future__ import annotations

from typing import Mapping

from fedmisp.model.records import RecordError, SignatureError
from fedmisp.policy.filters import element_check, event_check
from fedmisp.policy.orgs import KeyState, signed_while_current
from fedmisp.policy.model import SHARING_GROUP, ElementView, EventView, NodeState, PeerMode, PeerPolicy
from fedmisp.policy.pipeline import (
    TAKES, EventPlan, Outcome, cap, decide_elements, link_reason, plan, received_level, record_level_in, refused, sharing_group_reason,
)
from fedmisp.policy.reasons import FILTER_REASONS, Reason


def check_received(*, well_formed: bool = True, within_limits: bool = True, signature_valid: bool = True,
                   digests_valid: bool = True, author_known: bool = True) -> Reason:
    """Inbound step 1, from what the record layer found when it opened the record."""
    if not well_formed:
        return Reason.MALFORMED
    if not within_limits:
        return Reason.TOO_LARGE
    if not signature_valid:
        return Reason.BAD_SIGNATURE
    if not digests_valid:
        return Reason.BAD_DIGEST
    if not author_known:
        return Reason.UNKNOWN_AUTHOR
    return Reason.ALLOWED


def inbound(event: EventView, offered: Mapping[str, int], peer: PeerPolicy, node: NodeState,
            held_timestamp: int | None = None, event_plan: EventPlan | None = None) -> Outcome:
    """What of an event a peer sent this node may keep, and at which level.

    `offered` is what the sender sent: the event uuid and each element uuid, with the level the
    sender's outbound pipeline says the receiver holds it at. The receiver checks that word against
    what the author signed (`received_level`) and applies its own pull filter.
    """
    internal = peer.mode is PeerMode.INTERNAL
    # the link (and, of step 2, that only a published event was the sender's to send)
    link = link_reason(peer, node, TAKES, event.published)
    if link is not Reason.ALLOWED:
        return refused(link)
    # 2. the sender was allowed to send it
    sent = offered.get(event.uuid)
    if sent is None:
        return refused(Reason.MALFORMED)
    level = received_level(sent, event.distribution, internal)
    if level is None:
        return refused(Reason.HOP_BUDGET)
    if level == SHARING_GROUP:
        reason = sharing_group_reason(event.sharing_group, peer.org_uuid, node, inbound=True)
        if reason is not Reason.ALLOWED:
            return refused(reason)
    # 3. blocklists and the pull filter
    if event.uuid in node.blocked_events:
        return refused(Reason.BLOCKLIST_EVENT)
    if event.orgc_uuid in node.blocked_orgs:
        return refused(Reason.BLOCKLIST_ORG)
    check = event_check(peer.pull, event)
    capped = cap(level, peer.pull) if check is None else None
    if capped is None:
        return refused(FILTER_REASONS[check or "distribution"][1])
    # 4. no rollback
    reason = not_older(held_timestamp, event.timestamp)
    if reason is not Reason.ALLOWED:
        return refused(reason)
    levels: dict[str, int] = {event.uuid: capped}
    withheld: dict[str, Reason] = {}
    decide_elements(event_plan or plan(event), offered, peer, node, peer.pull, 1, internal, True, levels, withheld)
    # 5. correlation-only peers feed the correlation index alone
    return Outcome(Reason.ALLOWED, levels, withheld, correlation_only=peer.mode is PeerMode.CORRELATION_ONLY)


def record_reason(error: RecordError) -> Reason:
    """1. Why a record that does not open is refused: its signature, or its form."""
    if isinstance(error, SignatureError):
        return check_received(signature_valid=False)
    return check_received(well_formed=False)


def key_known(state: KeyState, created: int, *, configured: bool, blocked: bool = False) -> bool:
    """1. An author's key is known here: this node's own or a configured peer's (`configured`), or
    introduced by an org record this node accepted (`state.org`); a key a rotation retired signs
    only what it signed before the rotation (`created`, decision 0013); a key revoked here
    (`blocked`) is known for nothing."""
    if blocked or not signed_while_current(state, created):
        return False
    return state.org is not None or configured


def author_reason(*, blocked: bool, known: bool) -> Reason:
    """1. The author's key: not revoked here ([blocklist] keys: nothing it signs, introduces or
    vouches for is taken), and known (this node's, a configured peer's, or introduced by an org
    record this node accepted; and, if a rotation retired it, signed before the rotation)."""
    if blocked:
        return Reason.KEY_BLOCKED
    if not known:
        return Reason.UNKNOWN_AUTHOR
    return Reason.ALLOWED


def not_older(held: int | None, timestamp: int, *, held_id: bytes | None = None, record_id: bytes = b"") -> Reason:
    """4. No rollback: a revision is refused when the one held is newer. Revisions are ordered by
    the event's timestamp, then by record id (docs DESIGN); the ids break a tie only where both
    are known (the store's write; the session before it fetches bodies knows only timestamps, so a
    tie goes on to the store). `held`: the held revision's timestamp (None: nothing held)."""
    if held is None:
        return Reason.ALLOWED
    if held_id is None:
        return Reason.OLDER if timestamp < held else Reason.ALLOWED
    return Reason.OLDER if (timestamp, record_id) < (held, held_id) else Reason.ALLOWED


def by_author(signer: bytes, author: bytes, refusal: Reason = Reason.NOT_AUTHOR) -> Reason:
    """4. Only an event's author revises it, retracts it or decides its proposals (DESIGN: the
    creator org; decisions 0001 and 0017: the key that signed the event). `signer` and `author`
    are the keys each rotation leads to (decision 0013), so a rotated key keeps its events; any
    other key, however new its timestamp, would overwrite someone else's event everywhere."""
    return Reason.ALLOWED if signer == author else refusal


# The source of an event that came from a MISP peer, through this node's bridge (node/misp_config.py):
# "misp:<peer name>"; an event made here has "", one from a fedmisp peer or a feed its name.
MISP_SOURCE = "misp:"


def bridge_reason(held_source: str, source: str) -> Reason:
    """4. An event that came from a MISP peer is signed by this node as its importer (decision 0001),
    so the author rule alone would let anything this node signs replace it. Only that MISP peer,
    through the bridge, revises it; and an event that did not come from a MISP peer (made here, or a
    peer's, or a feed's) is never replaced by what a MISP peer sends (decision 0032)."""
    if held_source.startswith(MISP_SOURCE) or source.startswith(MISP_SOURCE):
        return Reason.ALLOWED if held_source == source else Reason.NOT_BRIDGE
    return Reason.ALLOWED


def attached_inbound(author: bytes | None, signer: bytes, *, decision: bool) -> Reason:
    """Attached records (sightings, proposals, decisions) are kept with their event only: refused
    while the event is not held (`author`: the current key of the held event's author, None when
    it is not held). A proposal decision counts only if the event's author signed it (`signer`:
    its current key): the creator org decides on proposals to its event."""
    if author is None:
        return Reason.EVENT_NOT_HELD
    if decision:
        return by_author(signer, author, Reason.DECISION_NOT_CREATOR)
    return Reason.ALLOWED


def analyst_inbound(*, event_held: bool, signer_org: str | None, orgc_uuid: str, by_event_author: bool,
                    held_by: str | None, offered: int, distribution: int, sharing_group: str | None,
                    peer: PeerPolicy, node: NodeState, target_held: bool = True,
                    target_views: tuple[ElementView, ...] = (), event: EventView | None = None) -> tuple[Reason, int]:
    """Whether this node keeps an analyst-data item a peer sent, and at which level (decision 0029).

    Taken only from a peer this node takes from (`peer-mode`: not a push-only one). Kept with its
    event only (`event_held`). Signed for the org it names as its creator: by a
    current key of that org (`signer_org`: the org the signer's current key signs for), or by the
    event's author (`by_event_author`: an event imported with the notes in its file, whose
    creators the importing node vouches for as it vouches for the event's Orgc, decision 0001).
    An item held already is edited only by the org that made it (`held_by`: the creator org of
    the item of that uuid held here). Its level as for an element (`received_level` against its
    signed `distribution`, sharing-group membership of the sender, the pull filter's cap), not
    from an organisation this node blocks, and only while what it is on is held here
    (`target_held`: the element or report, or the item), and only if this peer's pull filter takes
    what it is on (`target_views`: the element and the object it is in): one the filter withholds
    from this peer takes the items on it with it on this path, as an element's members go with
    their object, even when another path brought the element; likewise the event (`event`: its
    view), which this peer's pull filter must take."""
    link = link_reason(peer, node, TAKES)  # a push-only peer's items are refused like its events
    if link is not Reason.ALLOWED:
        return link, -1
    if not event_held:
        return Reason.EVENT_NOT_HELD, -1
    if signer_org != orgc_uuid and not by_event_author:
        return Reason.NOT_AUTHOR, -1
    if held_by is not None and held_by != orgc_uuid:
        return Reason.NOT_AUTHOR, -1
    if orgc_uuid in node.blocked_orgs:
        return Reason.BLOCKLIST_ORG, -1
    if event is not None and event_check(peer.pull, event) is not None:
        return Reason.PARENT_WITHHELD, -1
    if not target_held or any(element_check(peer.pull, view) is not None for view in target_views):
        return Reason.PARENT_WITHHELD, -1
    return record_level_in(offered, distribution, sharing_group, peer, node)
