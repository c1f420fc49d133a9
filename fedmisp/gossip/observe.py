"""What replication reports as it decides: one Decision per record and peer, one call per pull.

The gossip layer says what happened; the node decides where it goes (metrics, the audit log, the
log). Nothing here does I/O. A Replica without an observer reports to NO_OBSERVER.

Decisions, by the side that makes them:
- the sender, for each record of its log a peer's changes request reaches:
  ``out/sent`` (offered, with the elements withheld from the offer by reason) or
  ``out/withheld`` (the whole record kept back, with the reason code);
- the receiver, for each record of a stored batch:
  ``in/stored`` (kept, with the elements it did not keep by reason) or
  ``in/refused`` (not kept, with the reason code). A revision the node already held is neither.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping, Protocol

OUT, IN = "out", "in"
SENT, WITHHELD, STORED, REFUSED = "sent", "withheld", "stored", "refused"
# The kind of the one decision that is about a whole pull, not a record: ``in/refused`` with kind
# "pull" when a pull rule (deadline, no progress) or a refused reply ended a pull from the peer.
PULL = "pull"


@dataclass(frozen=True, slots=True)
class Decision:
    peer: str
    direction: str  # OUT or IN
    action: str  # SENT, WITHHELD (out); STORED, REFUSED (in)
    kind: str = ""  # record kind ("event", "sightings", ...); "" when the record did not open
    record_id: bytes = b""
    event_uuid: str = ""
    reason: str = ""  # the reason code of a whole-record refusal (policy/reasons.py)
    elements: Mapping[str, int] = field(default_factory=dict)  # reason -> elements left out
    detail: str = ""

    @property
    def refusal(self) -> bool:
        return self.action in (WITHHELD, REFUSED)


class Observer(Protocol):
    def decided(self, decision: Decision) -> None: ...

    def pulled(self, peer: str, seconds: float, ok: bool) -> None: ...


class _NoObserver:
    def decided(self, decision: Decision) -> None:
        pass

    def pulled(self, peer: str, seconds: float, ok: bool) -> None:
        pass


NO_OBSERVER: Observer = _NoObserver()


class Fanout:
    """Several observers as one (the node's metrics and its audit log)."""

    def __init__(self, observers: tuple[Observer, ...]):
        self.observers = observers

    def decided(self, decision: Decision) -> None:
        for observer in self.observers:
            observer.decided(decision)

    def pulled(self, peer: str, seconds: float, ok: bool) -> None:
        for observer in self.observers:
            observer.pulled(peer, seconds, ok)


def count_reasons(reasons: Mapping[str, object]) -> dict[str, int]:
    """{item: reason} -> {reason code: how many items}."""
    out: dict[str, int] = {}
    for reason in reasons.values():
        code = getattr(reason, "value", reason)
        assert isinstance(code, str)
        out[code] = out.get(code, 0) + 1
    return out
