"""This node pulls from and pushes to MISP instances ([[peer]] kind = "misp" with misp_key), as a MISP
server syncs with another (app/Model/Server.php pull and push, decision 0032).

Pull (Server::pull): /servers/getVersion; the event index (POST /events/index, minimal, published,
the peer's pull filter as MISP's pull rules: tags and orgs); each event that changed, oldest first,
by /events/view/<uuid> with deleted items and without local tags, galaxies or correlations. Each is
made ready by misp_inbound.prepare_misp_events (MISP's pull downgrade, then this node's inbound
policy) and stored through the node's single writer. An event MISP's pull would not save (nothing
but deleted or no attributes, objects or reports) is refused as MISP refuses it.

Incremental by MISP's timestamps: the checkpoint `misp-pull:<peer>` is MISP's event timestamp up to
which everything listed has been stored, refused or filtered, written in the same LMDB transaction
as the events. The next listing asks for events changed (`timestamp`) or published
(`publish_timestamp`: MISP publishes without touching the timestamp) at or after it, inclusive,
because events share a second; what is listed again is held already and not fetched (MISP's
removeOlderEvents). A download that fails holds the checkpoint at its timestamp, so it is tried
again. A crash resumes from the last batch stored.

Then sightings (Sighting::pullSightings): for the events held here (whoever made them) whose
sightings MISP published since the checkpoint `misp-sightings:<peer>` (the index's
sighting_timestamp), /sightings/restSearch/event; each sighting not held yet, on an attribute held,
is kept in a sightings record signed by this node (a repeat is recognised by its uuid). Then
proposals (ShadowAttribute::pullProposals) changed since `misp-proposals:<peer>`, on events held.

Push (Server::push): what the outbound pipeline offers the MISP peer's organisation (the same
decision as for peers and served feeds, decision 0011), downgraded as MISP pushes to a server that
is not internal: a level 2 item goes as 1, what would be held at 0 (levels 0 and 1) is not pushed, a
sharing group only with its SharingGroup block (the pipeline checked the MISP organisation is a
member), published events only, never local tags. /events/filterEventIdsForPush says which of them
MISP wants; each goes by events/add or events/edit/<uuid> (metadata:1), as MISP's pushEvent. An
event that came from that MISP peer is never pushed back to it. The checkpoint `misp-push:<peer>`
is this node's log sequence up to which everything was pushed (MISP's lastpushedid: held at the
first failure). Then sightings (Sighting::pushSightings): of each event MISP holds, those it lacks.
"""
from __future__ import annotations

import asyncio
import logging
import re
import time
from collections import deque
from contextlib import aclosing
from dataclasses import dataclass, field
from typing import Any, AsyncIterator, Awaitable, Callable, Iterator

from fedmisp.gossip.observe import IN, NO_OBSERVER, OUT, REFUSED, SENT, STORED, WITHHELD, Decision, Observer
from fedmisp.gossip.replica import Replica
from fedmisp.gossip.sharing_groups import SharingGroupError, from_record
from fedmisp.node.feed_fetch import reschedule_jobs
from fedmisp.node.feeds import offered_event
from fedmisp.node.importer import FileResult, ImportReport, uuid_text
from fedmisp.node.misp_client import AnswerTooLarge, MispClient, MispError
from fedmisp.node.misp_config import MispPeer
from fedmisp.node.misp_inbound import MispResult, misp_source, prepare_misp_events
from fedmisp.model.analyst import NOTE, OPINION, RELATIONSHIP
from fedmisp.model.misp import EventError, parse_proposal
from fedmisp.model.records import KIND_PROPOSAL, KIND_SIGHTINGS, Record, seal
from fedmisp.policy.model import PeerMode
from fedmisp.policy.reasons import Reason
from fedmisp.store.events import WriteOutcome
from fedmisp.store.rows import EventWrite

log = logging.getLogger("fedmisp.misp")

Submit = Callable[[list[EventWrite], "tuple[str, int] | None"], Awaitable[list[WriteOutcome]]]
RunBlocking = Callable[..., Awaitable[Any]]

_UUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}\Z")
# The event view MISP's pull asks for (Server::__pullEvent): deleted items too, so deletions come
# along; no galaxies, correlations or warninglist hits; no local tags from a server not internal.
EVENT_VIEW_PARAMS = ("/deleted[]:0/deleted[]:1/excludeGalaxy:1/includeEventCorrelations:0"
                     "/includeFeedCorrelations:0/includeWarninglistHits:0/excludeLocalTags:1")
# Downloads under way at once: MISP's `php -S` and a typical web server's workers serve a few
# requests in parallel; more would only queue there.
FETCH_AHEAD = 4
# Events stored per transaction (with the checkpoint): what a crash can make a pull redo.
BATCH_EVENTS = 50
BATCH_ELEMENTS = 20_000
# Events of one MISP index a pull takes at most; the rest come at the next pull, from the checkpoint.
MAX_LISTED = 1_000_000
# A MISP timestamp further ahead of this node's clock than this is refused: a checkpoint moved to
# it would hide every later edit until the clocks met.
MAX_CLOCK_AHEAD_SECONDS = 86400
# Events per sightings request (Sighting::pullSightingNewWay asks for 20 at a time).
SIGHTING_EVENTS_PER_REQUEST = 20
MAX_SIGHTING_SOURCE = 255  # MISP's sightings.source is varchar(255)
# How often `fedmisp run` lists every event of a MISP peer rather than what changed since the
# checkpoint (the first sync after start is one): what reached MISP from elsewhere keeps its old
# timestamps. MISP's own scheduled pull lists everything every time; a day bounds the delay.
FULL_LISTING_SECONDS = 86400
# Proposals: MISP's pull asks for those of the last 90 days, 1000 a page (pullProposals).
PROPOSAL_DAYS = 90
PROPOSALS_PER_PAGE = 1000
MAX_PROPOSAL_PAGES = 1000  # a million proposals a pull; the rest at the next one
# filterEventIdsForPush requests carry at most this many events (MISP answers one list).
PUSH_QUERY_EVENTS = 1000
# What a pushed item's level becomes on the MISP side (Event::__updateEventForSync for a server
# that is not internal): the offered level is the one the receiver holds it at, 0 is not pushed.
PUSHED_LEVELS = {1: 1, 3: 3, 4: 4, 5: 5}
SHARING_GROUP = 4


def pull_checkpoint(peer: MispPeer) -> str:
    return f"misp-pull:{peer.name}"


def push_checkpoint(peer: MispPeer) -> str:
    return f"misp-push:{peer.name}"


def pulls(peer: MispPeer) -> bool:
    return peer.may_call and peer.mode in (PeerMode.FULL, PeerMode.PULL_ONLY)


def pushes(peer: MispPeer) -> bool:
    return peer.may_call and peer.mode in (PeerMode.FULL, PeerMode.PUSH_ONLY)


# --- pull ------------------------------------------------------------------------------------------

@dataclass
class PullReport(ImportReport):
    peer: str = ""
    listed: int = 0  # events MISP's index listed
    skipped: int = 0  # listed, and held already at that timestamp or newer: not fetched
    filtered: int = 0  # fetched; the peer's pull filter did not take them
    failed: list[str] = field(default_factory=list)  # downloads that failed: tried again next pull
    checkpoint: int = 0  # MISP's timestamp the next pull lists from
    sightings_stored: int = 0
    proposals_stored: int = 0

    def take(self, result: FileResult) -> None:
        """What misp_inbound made of one fetched event (the writer's outcomes are counted later)."""
        self.files += 1
        self.filtered += result.filtered
        self.refused.extend(result.refused)
        self.events_unchanged += result.unchanged
        self.events_older += result.older

    def summary(self) -> str:
        return (f"pull from MISP peer {self.peer}: {self.listed} listed, {self.skipped} held already, "
                f"{self.files} fetched: {self.events_stored} event(s) stored ({self.attributes_stored} attributes), "
                f"{self.events_unchanged} unchanged, {self.events_older} older than held, "
                f"{self.filtered} filtered out, {self.events_refused} refused, {len(self.failed)} failed to download, "
                f"{self.elements_dropped} element(s) dropped, {self.sightings_stored} sighting(s) and "
                f"{self.proposals_stored} proposal(s) stored; "
                f"checkpoint {self.checkpoint}")


@dataclass(frozen=True, order=True)
class Listed:
    timestamp: int
    uuid: str
    sighting_timestamp: int = field(default=0, compare=False)  # when its sightings were last published


def pull_rules(peer: MispPeer) -> dict[str, Any]:
    """The peer's pull filter as MISP's pull rules on the index (Server::filterRuleToParameter):
    tags and orgs, NOT as "!". Only exact names go: the filter itself is applied to every event
    fetched (misp_inbound), the rules only spare fetching what it would refuse."""
    f = peer.pull
    # an include list with a wildcard cannot be narrowed to exact names: it is left to the filter
    include = [] if any("*" in t for t in f.tags_include) else list(f.tags_include)
    tags = include + [f"!{t}" for t in f.tags_exclude if "*" not in t]
    orgs = list(f.orgs_include) + [f"!{o}" for o in f.orgs_exclude]  # MISP takes uuids and names
    return {**({"tag": tags} if tags else {}), **({"org": orgs} if orgs else {})}


def parse_index(answer: Any, where: str) -> tuple[list[Listed], list[str]]:
    """The entries of a minimal event index (uuid, timestamp, published), and refusals of bad ones."""
    if not isinstance(answer, list):
        raise MispError(f"{where}: expected a list of events (MISP's minimal event index)")
    listed, refused = [], []
    ahead = int(time.time()) + MAX_CLOCK_AHEAD_SECONDS
    for index, entry in enumerate(answer):
        uuid = entry.get("uuid") if isinstance(entry, dict) else None
        if not isinstance(uuid, str) or not _UUID.match(uuid):
            refused.append(f"{where}: entry #{index}: field 'uuid': {str(uuid)[:60]!r} is not an event uuid")
            continue
        try:
            stamp = int(entry.get("timestamp"))
        except (TypeError, ValueError):
            refused.append(f"{where}: event {uuid}: field 'timestamp': expected a Unix timestamp")
            continue
        if not 0 <= stamp <= ahead:
            refused.append(f"{where}: event {uuid}: field 'timestamp': {stamp} is in the future of this node's "
                           f"clock by more than {MAX_CLOCK_AHEAD_SECONDS} s")
            continue
        if str(entry.get("published")) in ("1", "True", "true"):
            listed.append(Listed(stamp, uuid.lower(), _timestamp(entry.get("sighting_timestamp"), ahead)))
    return listed, refused


async def list_events(client: MispClient, peer: MispPeer, since: int) -> tuple[list[Listed], list[str]]:
    """Published events MISP lists for the pull rules, changed or published at or after `since`
    (everything when 0), each once, oldest first."""
    base = {"minimal": 1, "published": 1, **pull_rules(peer)}
    queries = [base] if since <= 0 else [{**base, "timestamp": since}, {**base, "publish_timestamp": since}]
    found: dict[str, Listed] = {}
    refused: list[str] = []
    for query in queries:
        answer = await client.call("POST", "/events/index", query)
        listed, bad = parse_index(answer, f"MISP peer {peer.name} ({peer.url}/events/index)")
        refused.extend(b for b in bad if b not in refused)
        for entry in listed:
            found[entry.uuid] = max(entry, found.get(entry.uuid, entry))
    # the oldest first, so that a listing cut at MAX_LISTED moves the checkpoint only over what it took
    return sorted(found.values())[:MAX_LISTED], refused


def changed(node: Any, listed: list[Listed]) -> list[Listed]:
    """What to fetch: events not held, or held older than listed (Server::removeOlderEvents)."""
    out = []
    for entry in listed:
        held = node.store.held(entry.uuid)
        if held is None or held.timestamp < entry.timestamp:
            out.append(entry)
    return out


def saveable(raw: Any) -> bool:
    """MISP's pull keeps an event only with an attribute, object attribute or report not deleted
    (Server::__checkIfEventSaveAble)."""
    def alive(items: Any) -> list[Any]:
        return [i for i in items or () if isinstance(i, dict) and not _flag(i.get("deleted"))]
    if not isinstance(raw, dict):
        return True  # not an event: misp_inbound refuses it with its reason
    if alive(raw.get("Attribute")) or alive(raw.get("EventReport")):
        return True
    return any(alive(o.get("Attribute")) for o in alive(raw.get("Object")))


def _timestamp(value: Any, ahead: int) -> int:
    """A MISP timestamp that is optional (a sighting_timestamp): 0 when absent or out of range."""
    try:
        stamp = int(value)
    except (TypeError, ValueError):
        return 0
    return stamp if 0 <= stamp <= ahead else 0


def _flag(value: Any) -> bool:
    return value in (True, 1, "1", "true", "True")


def prepare_pulled(node: Any, peer: MispPeer, document: Any, label: str, event_uuid: str) -> MispResult:
    """One downloaded event, checked to be the one asked for and one MISP's pull would save, then
    made ready by misp_inbound."""
    event = document.get("Event") if isinstance(document, dict) else None
    result = MispResult()
    if not isinstance(event, dict) or str(event.get("uuid", "")).lower() != event_uuid:
        result.refuse(Reason.MALFORMED, f"{label}: expected the event {event_uuid} as MISP JSON ({{\"Event\": ...}})")
    elif not saveable(event):
        result.refuse(Reason.MALFORMED, f"{label}: event {event_uuid}: empty (no attribute, object or report that "
                      "is not deleted); MISP's pull does not save such an event either")
    else:
        result = prepare_misp_events(node, peer, document, pulled=True, label=label)
    return result


async def fetched(client: MispClient, todo: list[Listed]) -> AsyncIterator[tuple[Listed, Any]]:
    """Each listed event's MISP JSON (or the MispError of its download), in order, with up to
    FETCH_AHEAD downloads under way while the earlier ones are prepared and stored."""
    async def fetch(entry: Listed) -> Any:
        try:
            return await client.call("GET", f"/events/view/{entry.uuid}{EVENT_VIEW_PARAMS}")
        except MispError as e:
            return e
    pending = iter(todo)
    window: deque[tuple[Listed, asyncio.Task[Any]]] = deque()
    try:
        for entry in pending:
            window.append((entry, asyncio.ensure_future(fetch(entry))))
            if len(window) >= FETCH_AHEAD:
                break
        while window:
            entry, task = window.popleft()
            document = await task
            following = next(pending, None)
            if following is not None:
                window.append((following, asyncio.ensure_future(fetch(following))))
            yield entry, document
    finally:  # a pull that stops early (the writer failed) leaves no download behind
        for _, task in window:
            task.cancel()


class _Batch:
    """Events waiting to be stored with the checkpoint that covers them."""

    def __init__(self) -> None:
        self.clear()

    def clear(self) -> None:
        self.events: list[EventWrite] = []
        self.dropped: list[tuple[str, ...]] = []
        self.elements = 0
        self.pending = False  # something was decided since the last store: the checkpoint moves

    def add(self, result: FileResult) -> None:
        self.events.extend(result.events)
        self.dropped.extend(result.dropped)
        self.elements += sum(e.element_count for e in result.events)
        self.pending = True

    def full(self) -> bool:
        return len(self.events) >= BATCH_EVENTS or self.elements >= BATCH_ELEMENTS


async def pull(node: Any, peer: MispPeer, client: MispClient, submit: Submit, run_blocking: RunBlocking,
               *, full: bool = False, observer: Observer = NO_OBSERVER) -> PullReport:
    """Pull what changed on the MISP peer; `full` lists every event (MISP's "full" pull), not only
    those changed since the checkpoint. Raises MispError when the MISP instance cannot be used.
    `observer` (the metrics and the audit log) is told each event stored or refused."""
    report = PullReport(peer=peer.name)
    await client.check()
    name = pull_checkpoint(peer)
    stored = await run_blocking(node.store.checkpoint, name)
    listed, refused = await list_events(client, peer, 0 if full else stored)
    report.listed = len(listed)
    report.refused.extend(refused)
    todo = await run_blocking(changed, node, listed)
    report.skipped = len(listed) - len(todo)
    mark = stored
    held_at: int | None = None  # the timestamp of the first failed download: the mark stays there
    batch = _Batch()

    async def store() -> None:
        outcomes = await submit(batch.events, (name, mark))
        for event, dropped, outcome in zip(batch.events, batch.dropped, outcomes):
            report.count(event.uuid, event.attribute_count, outcome, dropped)
            if outcome is WriteOutcome.STORED:
                observer.decided(Decision(peer.name, IN, STORED, "event", event_uuid=uuid_text(event.uuid)))
            elif isinstance(outcome, Reason):
                observer.decided(Decision(peer.name, IN, REFUSED, "event", event_uuid=uuid_text(event.uuid),
                                          reason=outcome.value))
        batch.clear()

    async with aclosing(fetched(client, todo)) as downloads:
        async for entry, document in downloads:
            path = f"/events/view/{entry.uuid}"
            if isinstance(document, AnswerTooLarge):  # refused until it changes, as an invalid event
                result = MispResult()
                result.refuse(Reason.TOO_LARGE, f"event {entry.uuid}: {document}")
            elif isinstance(document, MispError):  # tried again at the next pull
                report.failed.append(str(document))
                held_at = entry.timestamp if held_at is None else held_at
                continue
            else:
                result = await run_blocking(prepare_pulled, node, peer, document, f"{peer.url}{path}", entry.uuid)
            report.take(result)
            for reason, text in zip(result.reasons, result.refused):
                observer.decided(Decision(peer.name, IN, REFUSED, "event", event_uuid=entry.uuid, reason=reason.value,
                                          detail=text))
            batch.add(result)
            mark = max(mark, entry.timestamp if held_at is None else held_at)
            if batch.full():
                await store()
    if batch.pending or mark != stored:
        await store()
    report.checkpoint = mark
    await pull_sightings(node, peer, client, submit, run_blocking, report, observer)
    await pull_proposals(node, peer, client, submit, run_blocking, report, observer)
    return report


# --- sightings (Sighting::pullSightings) ---------------------------------------------------------

def sightings_checkpoint(peer: MispPeer) -> str:
    return f"misp-sightings:{peer.name}"


def held_for_sightings(node: Any, listed: list[Listed], since: int) -> list[str]:
    """Events held here (from any source: sightings made on MISP reach an event's creator) whose
    sightings MISP published at or after `since` (MISP's pull keeps no per-event mark; inclusive,
    as seconds are shared; sightings held already are not taken twice)."""
    return [e.uuid for e in listed
            if e.sighting_timestamp and e.sighting_timestamp >= since and node.store.held(e.uuid) is not None]


def new_sightings(node: Any, event_uuid: str, answer: list[Any], where: str) -> tuple[list[dict[str, Any]], list[str]]:
    """The sightings of MISP's answer for one held event that this node does not hold yet, on
    attributes it holds, checked field by field (each bad one refused by name); none from an
    organisation in [blocklist] orgs."""
    found = node.store.revision(event_uuid)
    attributes = {e["uuid"] for e in found[1] if "type" in e and "value" in e} if found else set()
    held = {s.get("uuid") for r in node.store.event_records(event_uuid) if r.kind == KIND_SIGHTINGS
            for s in r.body.get("sightings", ())}
    ahead = int(time.time()) + MAX_CLOCK_AHEAD_SECONDS
    out, refused = [], []
    for item in answer:
        s = item.get("Sighting") if isinstance(item, dict) else None
        if not isinstance(s, dict) or str(s.get("event_uuid", "")).lower() != event_uuid:
            continue
        problem = _sighting_problem(s, attributes, ahead)
        if problem:
            refused.append(f"{where}: sighting {str(s.get('uuid'))[:40]!r} of event {event_uuid}: {problem}")
            continue
        sighting = {"attribute_uuid": s["attribute_uuid"].lower(), "date_sighting": int(s["date_sighting"]),
                    "source": s.get("source") or "", "type": int(s.get("type") or 0), "uuid": s["uuid"].lower()}
        org = s.get("Organisation")
        if isinstance(org, dict) and isinstance(org.get("uuid"), str) and _UUID.match(org["uuid"]):
            if org["uuid"].lower() in node.config.blocked_orgs:
                continue
            sighting["Organisation"] = {"uuid": org["uuid"].lower(), "name": str(org.get("name") or "")[:255]}
        if sighting["uuid"] not in held:
            held.add(sighting["uuid"])
            out.append(sighting)
    return out, refused


def _sighting_problem(s: dict[str, Any], attributes: set[str], ahead: int) -> str:
    if not isinstance(s.get("uuid"), str) or not _UUID.match(s["uuid"]):
        return "field 'uuid': not a uuid"
    target = s.get("attribute_uuid")
    if not isinstance(target, str) or target.lower() not in attributes:
        return "field 'attribute_uuid': not an attribute this node holds of the event"
    if _timestamp(s.get("date_sighting"), ahead) == 0:
        return "field 'date_sighting': expected a Unix timestamp, not ahead of this node's clock"
    if str(s.get("type", "0")) not in ("0", "1", "2"):
        return "field 'type': expected 0 (sighting), 1 (false positive) or 2 (expiration)"
    if not isinstance(s.get("source") or "", str) or len(s.get("source") or "") > MAX_SIGHTING_SOURCE:
        return f"field 'source': expected text of at most {MAX_SIGHTING_SOURCE} characters"
    return ""


async def pull_sightings(node: Any, peer: MispPeer, client: MispClient, submit: Submit, run_blocking: RunBlocking,
                         report: "PullReport", observer: Observer) -> None:
    """MISP's published sightings of the events held here, 20 events a request
    (/sightings/restSearch/event), each new one kept as a sightings record signed by this node (the
    bridge, as for events); the checkpoint is the newest sighting_timestamp taken."""
    name = sightings_checkpoint(peer)
    since = await run_blocking(node.store.checkpoint, name)
    answer = await client.call("POST", "/events/index", {"minimal": 1, "published": 1, **pull_rules(peer)})
    listed, _ = parse_index(answer, f"MISP peer {peer.name} ({peer.url}/events/index)")
    stamps = {e.uuid: e.sighting_timestamp for e in listed}
    wanted = await run_blocking(held_for_sightings, node, listed, since)
    mark = since
    for chunk in _chunks(wanted, SIGHTING_EVENTS_PER_REQUEST):
        path = "/sightings/restSearch/event"
        found = await client.call("POST", path, {"returnFormat": "json", "last": 0, "includeUuid": True,
                                                 "uuid": chunk})
        items = found.get("response") if isinstance(found, dict) else None
        if not isinstance(items, list):
            raise MispError(f"MISP peer {peer.name} ({peer.url}{path}): expected {{\"response\": [sightings]}}")
        records = []
        for event_uuid in chunk:
            sightings, refused = await run_blocking(new_sightings, node, event_uuid, items, f"{peer.url}{path}")
            report.refused.extend(refused)
            if sightings:
                records.append(seal(node.identity, KIND_SIGHTINGS, {"event_uuid": event_uuid, "sightings": sightings}))
                report.sightings_stored += len(sightings)
                observer.decided(Decision(peer.name, IN, STORED, KIND_SIGHTINGS, event_uuid=event_uuid))
        if records:
            await run_blocking(node.store.write_records, records)
        mark = max([mark, *(stamps[u] for u in chunk)])
    if mark != since:
        await submit([], (name, mark))


# --- proposals (ShadowAttribute::pullProposals) -------------------------------------------------

def proposals_checkpoint(peer: MispPeer) -> str:
    return f"misp-proposals:{peer.name}"


def new_proposals(node: Any, items: list[Any], where: str) -> tuple[list[Record], list[str], int]:
    """MISP's proposals (ShadowAttribute) on events held here that this node does not hold yet (by
    uuid and timestamp), validated as a proposal inside an event, each a proposal record signed by this node with
    the proposing organisation kept; (records, refusals, the newest proposal timestamp seen)."""
    records, refused, newest = [], [], 0
    held: dict[str, set[str]] = {}
    attributes: dict[str, set[str]] = {}
    ahead = int(time.time()) + MAX_CLOCK_AHEAD_SECONDS
    for item in items:
        sa = item.get("ShadowAttribute") if isinstance(item, dict) else None
        if not isinstance(sa, dict):
            continue
        newest = max(newest, _timestamp(sa.get("timestamp"), ahead))
        event_uuid = str(sa.get("event_uuid", "")).lower()
        if not _UUID.match(event_uuid) or node.store.held(event_uuid) is None:
            continue  # MISP's capture too keeps a proposal only with its event
        if event_uuid not in held:
            # (uuid, timestamp): MISP gives a proposed change the uuid of its attribute, so several
            # proposals for one attribute share it
            held[event_uuid] = {(r.body["proposal"].get("uuid"), r.body["proposal"].get("timestamp"))
                                for r in node.store.event_records(event_uuid) if r.kind == KIND_PROPOSAL}
            found = node.store.revision(event_uuid)
            attributes[event_uuid] = {e["uuid"] for e in found[1] if "type" in e and "value" in e} if found else set()
        if (str(sa.get("uuid", "")).lower(), _timestamp(sa.get("timestamp"), ahead)) in held[event_uuid]:
            continue
        target = str(sa.get("old_uuid") or "").lower() if str(sa.get("old_id", "0")) != "0" else None
        if target is not None and target not in attributes[event_uuid]:
            continue  # a change to an attribute this node does not hold (withheld from it, or gone)
        org = sa.get("Org")
        org = {"uuid": org["uuid"].lower(), "name": str(org.get("name") or "")[:255]} \
            if isinstance(org, dict) and isinstance(org.get("uuid"), str) and _UUID.match(org["uuid"]) else None
        if org is not None and org["uuid"] in node.config.blocked_orgs:
            continue
        try:
            proposal = parse_proposal(sa, event_uuid, int(time.time()), target, org)
        except EventError as e:
            refused.append(f"{where}: proposal of event {event_uuid}: " + "; ".join(map(str, e.problems)))
            continue
        held[event_uuid].add((proposal["uuid"], proposal["timestamp"]))
        records.append(seal(node.identity, KIND_PROPOSAL, {"event_uuid": event_uuid, "proposal": proposal}))
    return records, refused, newest


async def pull_proposals(node: Any, peer: MispPeer, client: MispClient, submit: Submit, run_blocking: RunBlocking,
                         report: "PullReport", observer: Observer) -> None:
    """MISP's proposals changed since the checkpoint (at first, of the last PROPOSAL_DAYS days, as
    MISP's pull asks), PROPOSALS_PER_PAGE a page, on events held here."""
    name = proposals_checkpoint(peer)
    since = await run_blocking(node.store.checkpoint, name) or int(time.time()) - PROPOSAL_DAYS * 86400
    mark = since
    for page in range(1, MAX_PROPOSAL_PAGES + 1):
        path = (f"/shadow_attributes/index/all:1/timestamp:{since}/limit:{PROPOSALS_PER_PAGE}/page:{page}"
                "/deleted[]:0/deleted[]:1.json")
        items = await client.call("GET", path)
        if not isinstance(items, list):
            raise MispError(f"MISP peer {peer.name} ({peer.url}{path}): expected a list of proposals")
        records, refused, newest = await run_blocking(new_proposals, node, items, f"{peer.url}{path}")
        report.refused.extend(refused)
        if records:
            await run_blocking(node.store.write_records, records)
            report.proposals_stored += len(records)
            for record in records:
                observer.decided(Decision(peer.name, IN, STORED, KIND_PROPOSAL, record_id=record.id,
                                          event_uuid=record.body["event_uuid"]))
        mark = max(mark, newest)
        if len(items) < PROPOSALS_PER_PAGE:
            break
    if mark != since:
        await submit([], (name, mark))


# --- push ------------------------------------------------------------------------------------------

@dataclass
class PushReport:
    peer: str = ""
    candidates: int = 0  # events changed since the push checkpoint
    withheld: int = 0  # the outbound pipeline (or MISP's push rules) let nothing of them go to this peer
    from_peer: int = 0  # came from this MISP peer: never pushed back to it
    not_wanted: int = 0  # MISP said it holds them already (filterEventIdsForPush)
    pushed: int = 0
    failed: list[str] = field(default_factory=list)
    checkpoint: int = 0
    sightings_pushed: int = 0

    def summary(self) -> str:
        return (f"push to MISP peer {self.peer}: {self.candidates} changed event(s): {self.pushed} pushed, "
                f"{self.not_wanted} held there already, {self.withheld} withheld by policy, {self.from_peer} "
                f"from that peer (not sent back), {len(self.failed)} failed; {self.sightings_pushed} sighting(s) "
                f"pushed; checkpoint {self.checkpoint}")


def push_candidates(node: Any, since: int) -> list[tuple[int, str]]:
    """(log sequence, uuid) of the events whose current revision is after `since`, in log order."""
    out = []
    for event_uuid in node.store.event_uuids():
        held = node.store.held(event_uuid)
        if held is not None and held.seq > since:
            out.append((held.seq, event_uuid))
    return sorted(out)


def pushed_event(replica: Replica, node: Any, peer: MispPeer, event_uuid: str, state: Any) -> dict[str, Any] | None:
    """The event as this node pushes it to `peer` (MISP JSON), or None when nothing of it goes."""
    event = offered_event(replica, peer.policy, event_uuid, state, deleted=True)
    if event is None:
        return None
    e = event["Event"]
    level = int(e["distribution"])
    if level not in PUSHED_LEVELS:
        return None  # held at 0 by the receiver: MISP pushes levels 0 and 1 to internal servers only
    groups: dict[str, dict[str, Any] | None] = {}

    def keep(item: dict[str, Any]) -> bool:
        item_level = int(item.get("distribution", 5))
        if item_level not in PUSHED_LEVELS:
            return False
        if item_level == SHARING_GROUP:
            block = _group_block(node, str(item.get("sharing_group_uuid", "")), groups)
            if block is None:
                return False
            item["SharingGroup"] = block
        return True

    if level == SHARING_GROUP and not keep(e):
        return None
    e["Attribute"] = [a for a in e["Attribute"] if keep(a)]
    for obj in e["Object"]:
        obj["Attribute"] = [a for a in obj["Attribute"] if keep(a)]
    e["Object"] = [o for o in e["Object"] if o["Attribute"] and keep(o)]
    if "EventReport" in e:
        e["EventReport"] = [r for r in e["EventReport"] if keep(r)]
    for part in [e, *e["Attribute"], *e["Object"], *(a for o in e["Object"] for a in o["Attribute"]),
                 *e.get("EventReport", ())]:
        for key in (NOTE, OPINION, RELATIONSHIP):  # MISP's push sends analyst data on its own, not nested
            part.pop(key, None)
    e["locked"] = True  # as MISP's push: the receiver takes later edits of it from sync only
    e.pop("id", None)
    return event


def _group_block(node: Any, group_uuid: str, cache: dict[str, dict[str, Any] | None]) -> dict[str, Any] | None:
    """MISP's SharingGroup block for a group this node holds: its organisations by uuid and name,
    roaming (a MISP server passes it on to servers of member organisations only)."""
    if group_uuid in cache:
        return cache[group_uuid]
    record = node.store.sharing_group(group_uuid)
    block = None
    if record is not None:
        try:
            group = from_record(record)
        except SharingGroupError:
            group = None
        if group is not None and not group.deleted:
            names = {o.get("uuid"): o.get("name", "") for o in node.store.orgs() if isinstance(o, dict)}

            def org(uuid: str) -> dict[str, str]:
                return {"uuid": uuid, "name": str(names.get(uuid) or uuid)}
            members = {group.owner: True, **group.members}
            block = {"uuid": group.uuid, "name": group.name, "releasability": group.releasability or group.name,
                     "description": group.description, "roaming": True, "active": True,
                     "Organisation": org(group.owner),
                     "SharingGroupOrg": [{"extend": extend, "Organisation": org(uuid)}
                                         for uuid, extend in sorted(members.items())],
                     "SharingGroupServer": []}
    cache[group_uuid] = block
    return block


def _chunks(items: list[Any], size: int) -> Iterator[list[Any]]:
    for start in range(0, len(items), size):
        yield items[start:start + size]


async def push(node: Any, peer: MispPeer, client: MispClient, submit: Submit, run_blocking: RunBlocking,
               *, full: bool = False, observer: Observer = NO_OBSERVER) -> PushReport:
    """Push what changed since the push checkpoint (everything with `full`) to the MISP peer;
    `observer` is told each event sent or withheld."""
    report = PushReport(peer=peer.name)
    if not peer.org_uuid:
        raise MispError(f"MISP peer {peer.name} ({peer.url}): org_uuid is not set; this node pushes a MISP "
                        "instance only what its outbound policy lets that instance's host organisation have")
    await client.check()
    name = push_checkpoint(peer)
    stored = await run_blocking(node.store.checkpoint, name)
    head = await run_blocking(node.store.head_sequence)
    candidates = await run_blocking(push_candidates, node, 0 if full else stored)
    report.candidates = len(candidates)
    replica = Replica(node)
    state = await run_blocking(replica.node_state)
    source = misp_source(peer)
    ready: list[tuple[int, dict[str, Any]]] = []
    for seq, event_uuid in candidates:
        meta = await run_blocking(node.store.event_meta, event_uuid)
        if meta is not None and meta.source == source:
            report.from_peer += 1
            observer.decided(Decision(peer.name, OUT, WITHHELD, "event", event_uuid=event_uuid,
                                      reason=Reason.FROM_PEER.value))
            continue
        event = await run_blocking(pushed_event, replica, node, peer, event_uuid, state)
        if event is None:
            report.withheld += 1
            observer.decided(Decision(peer.name, OUT, WITHHELD, "event", event_uuid=event_uuid))
            continue
        ready.append((seq, event))
    first_failure: int | None = None
    for chunk in _chunks(ready, PUSH_QUERY_EVENTS):
        query = [{"Event": {"uuid": e["Event"]["uuid"], "timestamp": e["Event"]["timestamp"]}} for _, e in chunk]
        wanted = await client.call("POST", "/events/filterEventIdsForPush", query)
        wanted = {str(u).lower() for u in wanted} if isinstance(wanted, list) else set()
        for seq, event in chunk:
            if event["Event"]["uuid"] not in wanted:
                report.not_wanted += 1
                continue
            try:
                await push_event(client, event)
                report.pushed += 1
                observer.decided(Decision(peer.name, OUT, SENT, "event", event_uuid=event["Event"]["uuid"]))
            except MispError as e:
                report.failed.append(str(e))
                first_failure = seq if first_failure is None else first_failure
    mark = max(stored, head if first_failure is None else first_failure - 1)
    await submit([], (name, mark))
    report.checkpoint = mark
    await push_sightings(node, peer, client, run_blocking, replica, state, report, observer)
    return report


def held_sightings(node: Any, event_uuid: str) -> list[dict[str, Any]]:
    """Every sighting this node holds of an event, once each (by uuid)."""
    out: dict[str, dict[str, Any]] = {}
    for record in node.store.event_records(event_uuid):
        if record.kind == KIND_SIGHTINGS:
            for s in record.body.get("sightings", ()):
                if isinstance(s, dict) and isinstance(s.get("uuid"), str):
                    out.setdefault(s["uuid"], s)
    return list(out.values())


def sightings_to_push(node: Any, replica: Replica, peer: MispPeer, event_uuid: str, state: Any
                      ) -> list[dict[str, Any]]:
    """The sightings of a held event MISP may have: on attributes this node pushes it, in MISP's
    bulkSaveSightings form (type and time as text; org_id non-zero: saved on behalf of the
    sighting's organisation, as MISP's own push sends them)."""
    sightings = held_sightings(node, event_uuid)
    if not sightings:
        return []
    event = pushed_event(replica, node, peer, event_uuid, state)
    if event is None:
        return []
    e = event["Event"]
    attributes = {a["uuid"] for a in e["Attribute"]} | {a["uuid"] for o in e["Object"] for a in o["Attribute"]}
    out = []
    for s in sightings:
        if s["attribute_uuid"] not in attributes:
            continue
        item = {"uuid": s["uuid"], "attribute_uuid": s["attribute_uuid"], "type": str(s.get("type", 0)),
                "date_sighting": str(s["date_sighting"]), "source": s.get("source") or "", "org_id": "0"}
        if s.get("Organisation"):
            item["org_id"], item["Organisation"] = "1", dict(s["Organisation"])
        out.append(item)
    return out


async def push_sightings(node: Any, peer: MispPeer, client: MispClient, run_blocking: RunBlocking,
                         replica: Replica, state: Any, report: PushReport, observer: Observer) -> None:
    """After the events, as Sighting::pushSightings: for each event MISP holds and this node may push
    it, the sightings MISP does not hold yet (/sightings/filterSightingUuidsForPush/<uuid>), sent by
    /sightings/bulkSaveSightings/<uuid>."""
    answer = await client.call("POST", "/events/index", {"minimal": 1, "published": 1})
    listed, _ = parse_index(answer, f"MISP peer {peer.name} ({peer.url}/events/index)")
    for entry in listed:
        if await run_blocking(node.store.held, entry.uuid) is None:
            continue
        sightings = await run_blocking(sightings_to_push, node, replica, peer, entry.uuid, state)
        if not sightings:
            continue
        try:
            there = await client.call("POST", f"/sightings/filterSightingUuidsForPush/{entry.uuid}",
                                      [s["uuid"] for s in sightings])
            there = {str(u).lower() for u in there} if isinstance(there, list) else set()
            new = [s for s in sightings if s["uuid"] not in there]
            if new:
                await client.call("POST", f"/sightings/bulkSaveSightings/{entry.uuid}", new)
                report.sightings_pushed += len(new)
                observer.decided(Decision(peer.name, OUT, SENT, KIND_SIGHTINGS, event_uuid=entry.uuid))
        except MispError as e:
            report.failed.append(str(e))


async def push_event(client: MispClient, event: dict[str, Any]) -> None:
    """events/edit/<uuid> when MISP holds the event (HEAD events/view), else events/add, as MISP's
    ServerSyncTool::pushEvent; "not newer than the local copy" is not a failure."""
    event_uuid = event["Event"]["uuid"]
    status, _ = await client.request("HEAD", f"/events/view/{event_uuid}", limit=1 << 20)
    path = f"/events/edit/{event_uuid}/metadata:1" if status == 200 else "/events/add/metadata:1"
    status, raw = await client.request("POST", path, event, limit=1 << 24)
    if 200 <= status < 300:
        return
    if status == 403 and b"not newer than the local copy" in raw:
        return
    raise MispError(f"MISP peer {client.peer.name} ({client.peer.url}{path}): event {event_uuid}: "
                    + client.status_problem(status, raw))


# --- in `fedmisp run` ------------------------------------------------------------------------------

class MispSync:
    """In `fedmisp run`: one APScheduler job per MISP peer with misp_key, every interval_seconds
    (first at start): a pull, then a push, as its mode says. One sync at a time, so two MISP peers
    never race to store the same event; a failure is logged and kept for the status, never stops
    the node."""

    def __init__(self, node: Any, submit: Submit, run_blocking: RunBlocking, observer: Observer = NO_OBSERVER):
        self.node = node
        self.submit = submit
        self.run_blocking = run_blocking
        self.observer = observer  # the metrics and the audit log, as for fedmisp peers
        self.last: dict[str, dict[str, Any]] = {}  # peer name -> {"last_pull_from": ..., "last_push_to": ...}
        self._lock = asyncio.Lock()
        self._scheduler: Any = None
        self._full_at: dict[str, float] = {}  # peer name -> when its last full listing was (monotonic)

    def peers(self) -> list[MispPeer]:
        return [p for p in self.node.config.misp_peers if p.may_call]

    async def start(self) -> None:
        from apscheduler.schedulers.asyncio import AsyncIOScheduler
        self._scheduler = AsyncIOScheduler()
        self._scheduler.start()
        self.reschedule()

    def reschedule(self) -> None:
        """Jobs as the configuration says now (at start and after a reload)."""
        if self._scheduler is not None:
            reschedule_jobs(self._scheduler, "misp-", {p.name: p.interval_seconds for p in self.peers()}, self.sync)

    async def stop(self) -> None:
        if self._scheduler is not None:
            self._scheduler.shutdown(wait=False)

    def status_json(self) -> dict[str, Any]:
        """Each MISP peer and what its last pull and push did (GET /node/v1/peers, fedmisp status)."""
        out = {}
        for peer in self.node.config.misp_peers:
            out[peer.name] = {"kind": "misp", "url": peer.url, "mode": peer.mode.value,
                              "calls": peer.may_call, "interval_seconds": peer.interval_seconds,
                              "pull_checkpoint": self.node.store.checkpoint(pull_checkpoint(peer)),
                              "push_checkpoint": self.node.store.checkpoint(push_checkpoint(peer)),
                              **self.last.get(peer.name, {})}
        return out

    async def sync(self, name: str) -> None:
        peer = next((p for p in self.peers() if p.name == name), None)
        if peer is None:
            return
        async with self._lock:
            last = self.last.setdefault(name, {})
            # the first pull after start and one a day list every event, as MISP's own pull always
            # does: an event that reached MISP from elsewhere keeps its older timestamps, so the
            # incremental listing (changed or published since the checkpoint) does not show it
            full = time.monotonic() - self._full_at.get(name, -FULL_LISTING_SECONDS) >= FULL_LISTING_SECONDS
            async with MispClient(peer) as client:
                for what, key, wanted, run in (("pull", "last_pull_from", pulls, pull),
                                               ("push", "last_push_to", pushes, push)):
                    if wanted(peer):
                        last[key] = await self._run(what, peer, client, run, full and what == "pull")
            if full and "error" not in last.get("last_pull_from", {}):
                self._full_at[name] = time.monotonic()

    async def _run(self, what: str, peer: MispPeer, client: MispClient, run: Any, full: bool) -> dict[str, Any]:
        outcome: dict[str, Any] = {"time": time.time()}
        started = time.monotonic()
        try:
            report = await run(self.node, peer, client, self.submit, self.run_blocking, full=full,
                               observer=self.observer)
        except MispError as e:
            log.warning("%s", e)
            outcome["error"] = str(e)
        except Exception as e:  # noqa: BLE001 - one MISP peer's failure never stops the node or the others
            log.exception("MISP peer %s: %s failed", peer.name, what)
            outcome["error"] = f"{type(e).__name__}: {e}"
        if what == "pull":
            self.observer.pulled(peer.name, time.monotonic() - started, "error" not in outcome)
        if "error" in outcome:
            return outcome
        for problem in (getattr(report, "refused", []) + report.failed)[:20]:
            log.warning("MISP peer %s: %s: %s", peer.name, what, problem)
        log.info("%s", report.summary())
        return {**outcome, "summary": report.summary(), **_counts(report)}


def _counts(report: Any) -> dict[str, Any]:
    """A report's counts for the status pages (its lists as lengths)."""
    out: dict[str, Any] = {}
    for key, value in vars(report).items():
        if isinstance(value, int):
            out[key] = value
        elif isinstance(value, list) and key != "dropped":
            out[key] = len(value)
    return out
