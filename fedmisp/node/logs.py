"""The node's log (text or JSON lines) and its audit log of what went to and came from each peer.

Log lines carry structured fields passed as ``extra`` (peer, reason, event_uuid, ...): a JSON line
has them as keys beside time, level, logger and message; a text line appends them as key=value.

The audit log is a separate file (``[audit] file``, default ``<home>/audit.log``), rotated by size,
with one JSON line per replication decision about a record and a peer (gossip/observe.py): records
sent to a peer (with the elements withheld from the offer, by reason), records withheld from it
(with the reason), records stored from a peer and records refused from it (with the reason).
"""
from __future__ import annotations

import json
import logging
import sys
import threading
import time
from datetime import datetime, timezone
from logging.handlers import RotatingFileHandler
from pathlib import Path
from typing import Any

from fedmisp.gossip.observe import Decision
from fedmisp.node.config import AuditConfig, LogConfig

log = logging.getLogger("fedmisp.audit")

TEXT_FORMAT = "%(asctime)s %(name)s %(levelname)s %(message)s"
# Attributes every LogRecord has; anything else on a record came from ``extra``.
_STANDARD = frozenset(vars(logging.makeLogRecord({}))) | {"message", "asctime", "taskName"}
_OURS = "_fedmisp_handler"  # marks the handlers configure_logging installed (replaced on reload)


def _time(created: float) -> str:
    return datetime.fromtimestamp(created, timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


# json.dumps escapes \n and \r but not these, which many line readers (Python's splitlines among
# them) also take as line ends: escaped too, so one object is always one line.
_LINE_BREAKS = str.maketrans({"\x85": "\\u0085", "\u2028": "\\u2028", "\u2029": "\\u2029"})


def json_line(value: Any) -> str:
    return json.dumps(value, default=str, ensure_ascii=False).translate(_LINE_BREAKS)


def fields_of(record: logging.LogRecord) -> dict[str, Any]:
    return {k: v for k, v in vars(record).items() if k not in _STANDARD and not k.startswith("_")}


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time (UTC, ISO 8601), level, logger, message, then the fields."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {"time": _time(record.created), "level": record.levelname, "logger": record.name,
                                "message": record.getMessage()}
        for key, value in fields_of(record).items():
            line.setdefault(key, value)
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return json_line(line)


class TextFormatter(logging.Formatter):
    """The classic line, with the structured fields appended as key=value."""

    def __init__(self) -> None:
        super().__init__(TEXT_FORMAT)

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        extra = fields_of(record)
        if not extra:
            return text
        return text + " " + " ".join(f"{k}={json_line(v)}" for k, v in extra.items())


def configure_logging(config: LogConfig, home: Path, *, log_format: str | None = None,
                      level: str | None = None) -> None:
    """Install the node's log handler on the root logger (again on reload: the previous one goes).
    `log_format` and `level` (from the command line) override the configuration."""
    root = logging.getLogger()
    for handler in list(root.handlers):
        if getattr(handler, _OURS, False):
            root.removeHandler(handler)
            handler.close()
    handler: logging.Handler
    if config.file:
        path = home / config.file
        path.parent.mkdir(parents=True, exist_ok=True)
        handler = RotatingFileHandler(path, maxBytes=config.max_bytes, backupCount=config.backups, encoding="utf-8")
    else:
        handler = logging.StreamHandler(sys.stderr)
    setattr(handler, _OURS, True)
    handler.setFormatter(JsonFormatter() if (log_format or config.format) == "json" else TextFormatter())
    root.addHandler(handler)
    chosen = logging.getLevelName((level or config.level).upper())
    root.setLevel(chosen)
    # APScheduler logs every job it adds and runs at info: noise beside the node's own lines
    logging.getLogger("apscheduler").setLevel(chosen if chosen <= logging.DEBUG else max(chosen, logging.WARNING))


class _AuditFile(RotatingFileHandler):
    """RotatingFileHandler looks at the file (two stats and a seek) before every line to decide on
    rotation; the audit log writes a line per record and peer, so it counts the bytes itself."""

    def __init__(self, path: Path, max_bytes: int, backups: int):
        super().__init__(path, maxBytes=max_bytes, backupCount=backups, encoding="utf-8", delay=True)
        self.setFormatter(logging.Formatter("%(message)s"))
        self._size: int | None = None  # bytes in the current file, once opened

    def shouldRollover(self, record: logging.LogRecord) -> bool:
        if self.stream is None:
            self.stream = self._open()
        if self._size is None:
            self._size = self.stream.tell()
        # the line as written (UTF-8, with its newline); an empty file takes any line
        self._pending = len(self.format(record).encode("utf-8")) + 1
        return 0 < self._size and self._size + self._pending > self.maxBytes

    def doRollover(self) -> None:
        super().doRollover()
        self._size = 0

    def emit(self, record: logging.LogRecord) -> None:
        super().emit(record)
        if self._size is not None:
            self._size += self._pending


class AuditLog:
    """The audit file of one node (several nodes in one process each have their own), and the
    refusals on the node's log at debug level. Safe to call from the store's worker threads."""

    def __init__(self, config: AuditConfig, home: Path):
        self._lock = threading.Lock()
        self._handler: _AuditFile | None = None
        self.configure(config, home)

    def configure(self, config: AuditConfig, home: Path) -> None:
        handler = None
        if config.enabled:
            path = home / config.file
            path.parent.mkdir(parents=True, exist_ok=True)
            # the file appears with the first decision, not at start
            handler = _AuditFile(path, config.max_bytes, config.backups)
        with self._lock:
            old, self._handler = self._handler, handler
        if old is not None:
            old.close()

    def close(self) -> None:
        with self._lock:
            old, self._handler = self._handler, None
        if old is not None:
            old.close()

    def decided(self, decision: Decision) -> None:
        line = audit_line(decision)
        if decision.refusal and log.isEnabledFor(logging.DEBUG):
            log.debug("%s %s %s: %s", decision.action, decision.kind or "record", decision.event_uuid or "",
                      decision.reason, extra={k: v for k, v in line.items() if k != "time"})
        handler = self._handler
        if handler is not None:
            handler.handle(logging.makeLogRecord({"msg": json_line(line), "args": None}))

    def pulled(self, peer: str, seconds: float, ok: bool) -> None:
        pass


def audit_line(d: Decision) -> dict[str, Any]:
    line: dict[str, Any] = {"time": _time(time.time()), "peer": d.peer, "direction": d.direction,
                            "action": d.action, "kind": d.kind, "record": d.record_id.hex()}
    if d.event_uuid:
        line["event_uuid"] = d.event_uuid
    if d.reason:
        line["reason"] = d.reason
    if d.elements:
        line["elements_left_out"] = dict(d.elements)
    if d.detail:
        line["detail"] = d.detail
    return line
