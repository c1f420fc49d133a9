"""Retractions: an event's author says that its earlier revisions are superseded (issue 13, item 7).

When a creator narrows who may hold an event (a lower distribution, another sharing group, a
deletion), the new revision reaches only the nodes it is meant for; a node that held an earlier
revision and may not have the new one would otherwise keep the old copy for ever (MISP has the same
hole: MISP issues #4784, #10899). So with every revision that replaces a published one, the author
signs a retraction:

    {event_uuid, before: [timestamp, revision record id], reach: {level, groups}}

`before` is the new revision's place in the revision order (timestamp, then record id): every
revision of the event ordered before it is superseded. `reach` is where the earlier published
revisions could have gone: the highest event distribution among them (0-3, or -1 when none was
below 4) and the sharing groups of those at level 4. The retraction travels as those revisions did
(policy/retractions.py), and a node that holds a superseded revision drops it; one that is entitled
to the new revision gets that as usual. The retraction carries no content of the event.
"""
from __future__ import annotations

import uuid as _uuid
from dataclasses import dataclass
from typing import Any

from fedmisp.model.records import KIND_RETRACTION, Record, RecordError

NO_LEVEL = -1  # no earlier revision reached beyond its groups (or none was published)
# Sharing groups named in one retraction: one per earlier revision at level 4 that used another
# group; an event moved between more groups than this keeps the most recent ones.
MAX_GROUPS = 64


@dataclass(frozen=True, slots=True)
class Reach:
    """Where earlier published revisions of an event could have gone."""
    level: int = NO_LEVEL  # the highest of their distributions below 4 (MISP levels 0-3), or -1
    groups: frozenset[str] = frozenset()  # the sharing groups of those at level 4

    def __bool__(self) -> bool:
        return self.level != NO_LEVEL or bool(self.groups)

    def widened(self, distribution: int, sharing_group: str | None) -> "Reach":
        """This reach and a revision's (event distribution 0-4, its group at 4)."""
        if distribution == 4:
            if not sharing_group:
                return self
            groups = sorted(self.groups | {sharing_group})
            return Reach(self.level, frozenset(groups[-MAX_GROUPS:]))
        return Reach(max(self.level, distribution), self.groups)

    def as_body(self) -> dict[str, Any]:
        return {"groups": sorted(self.groups), "level": self.level}


@dataclass(frozen=True, slots=True)
class Retraction:
    event_uuid: str
    before: tuple[int, bytes]  # (timestamp, record id) of the revision that supersedes the earlier ones
    reach: Reach

    def supersedes(self, timestamp: int, record_id: bytes) -> bool:
        """Whether a revision at (timestamp, record id) is one it retracts."""
        return (timestamp, record_id) < self.before


def retraction_body(event_uuid: str, timestamp: int, record_id: bytes, reach: Reach) -> dict[str, Any]:
    return {"before": [timestamp, record_id], "event_uuid": event_uuid, "reach": reach.as_body()}


def read_retraction(record: Record) -> Retraction:
    """What a verified retraction record says; RecordError names the field that is wrong."""
    if record.kind != KIND_RETRACTION:
        raise RecordError("retraction: not a retraction record")
    body = record.body
    if not isinstance(body, dict):
        raise RecordError("retraction: expected {event_uuid, before, reach}")
    event_uuid = body.get("event_uuid")
    try:
        if not isinstance(event_uuid, str) or str(_uuid.UUID(event_uuid)) != event_uuid:
            raise ValueError
    except ValueError:
        raise RecordError("retraction: event_uuid must be a lower-case uuid") from None
    before = body.get("before")
    if not (isinstance(before, list) and len(before) == 2 and before[0].__class__ is int
            and 0 <= before[0] < 2**63 and isinstance(before[1], bytes) and len(before[1]) == 32):
        raise RecordError("retraction: before must be [timestamp (0 to 2^63-1), 32-byte revision id]")
    reach = body.get("reach")
    if not isinstance(reach, dict):
        raise RecordError("retraction: reach must be {level, groups}")
    level, groups = reach.get("level"), reach.get("groups")
    if level.__class__ is not int or not NO_LEVEL <= level <= 3:
        raise RecordError("retraction: reach.level must be an integer from -1 to 3")
    if not isinstance(groups, list) or len(groups) > MAX_GROUPS:
        raise RecordError(f"retraction: reach.groups must be a list of at most {MAX_GROUPS} sharing group uuids")
    for group in groups:
        try:
            if not isinstance(group, str) or str(_uuid.UUID(group)) != group:
                raise ValueError
        except ValueError:
            raise RecordError("retraction: reach.groups must hold lower-case sharing group uuids") from None
    return Retraction(event_uuid, (before[0], before[1]), Reach(level, frozenset(groups)))
