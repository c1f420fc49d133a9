"""Observability: Prometheus metrics, JSON log lines and the audit log, from real replications."""
from __future__ import annotations

import json
import logging
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import tomli_w
from hypothesis import given, strategies as st
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from fedmisp.gossip.observe import IN, OUT, REFUSED, SENT, STORED, WITHHELD, Decision, Fanout
from fedmisp.node.config import CONFIG_FILE, AuditConfig, ConfigError, LogConfig, load_config
from fedmisp.node.home import Node, init_home
from fedmisp.node.importer import import_paths
from fedmisp.node.logs import AuditLog, JsonFormatter, TextFormatter, configure_logging
from fedmisp.node.metrics import NodeMetrics

from federation import make_federation, settle
from nodes import configure, running, wait_for
from test_gossip_replication import _event_at_level


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Prometheus text -> {(sample name, sorted labels): value}."""
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def value(scraped: dict, name: str, **labels: str) -> float:
    return scraped.get((name, tuple(sorted(labels.items()))), 0.0)


def audit_lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def _events(tmp_path: Path) -> dict[str, dict]:
    """green goes; red is kept back by the sender's default push filter (tlp:red); unwanted is
    sent but refused by the receiver's pull filter; local (level 0) never leaves."""
    return {
        "green": _event_at_level(tmp_path, 1, 3, Tag=[{"name": "tlp:green"}])[1],
        "red": _event_at_level(tmp_path, 2, 3, Tag=[{"name": "tlp:red"}])[1],
        "unwanted": _event_at_level(tmp_path, 3, 3, Tag=[{"name": "b:unwanted"}])[1],
        "local": _event_at_level(tmp_path, 4, 0)[1],
    }


PULL_FILTER = {("b", "a"): {"pull": {"tags_exclude": ["b:unwanted"]}}}


# --- in one process: what the replica decides reaches the audit log and the counters ---------------

def test_each_record_sent_withheld_stored_and_refused_is_audited_with_its_reason(tmp_path):
    nodes = make_federation(tmp_path, ["a", "b"], [("a", "b")], PULL_FILTER)
    events = _events(tmp_path)
    import_paths(nodes["a"], sorted(tmp_path.glob("ev*.json")))
    audits = {name: AuditLog(AuditConfig(), node.config.home) for name, node in nodes.items()}
    metrics = {name: NodeMetrics(node) for name, node in nodes.items()}
    settle(nodes, observers={n: Fanout((audits[n], metrics[n])) for n in nodes})

    a_lines = audit_lines(nodes["a"].config.home / "audit.log")
    b_lines = audit_lines(nodes["b"].config.home / "audit.log")
    a_events = {(d["event_uuid"], d["action"], d.get("reason")) for d in a_lines
                if d["peer"] == "b" and d["direction"] == OUT and d["kind"] == "event"}
    assert a_events == {(events["green"]["uuid"], SENT, None), (events["unwanted"]["uuid"], SENT, None),
                        (events["red"]["uuid"], WITHHELD, "push-filter-tlp"),
                        (events["local"]["uuid"], WITHHELD, "hop-budget")}
    b_events = {(d["event_uuid"], d["action"], d.get("reason")) for d in b_lines
                if d["peer"] == "a" and d["direction"] == IN and d["kind"] == "event"}
    assert b_events == {(events["green"]["uuid"], STORED, None),
                        (events["unwanted"]["uuid"], REFUSED, "pull-filter-tag")}
    # what b stored from a goes no further back to a (rule 5), and says so
    assert {(d["event_uuid"], d["reason"]) for d in b_lines if d["direction"] == OUT and d["kind"] == "event"} \
        == {(events["green"]["uuid"], "from-peer")}
    # each line names the record: the id b stored is the revision a holds
    stored = next(d for d in b_lines if d["action"] == STORED and d["kind"] == "event")
    assert bytes.fromhex(stored["record"]) == nodes["a"].store.held(events["green"]["uuid"]).record_id

    a = samples(generate_latest(metrics["a"].registry).decode())
    b = samples(generate_latest(metrics["b"].registry).decode())
    assert value(b, "fedmisp_records_stored_total", peer="a", kind="event") == 1
    assert value(b, "fedmisp_records_refused_total", peer="a", kind="event", reason="pull-filter-tag") == 1
    assert value(a, "fedmisp_records_sent_total", peer="b", kind="event") == 2
    assert value(a, "fedmisp_records_withheld_total", peer="b", kind="event", reason="push-filter-tlp") == 1
    assert value(a, "fedmisp_records_withheld_total", peer="b", kind="event", reason="hop-budget") == 1
    assert value(b, "fedmisp_events_held") == len(list(nodes["b"].store.event_uuids())) == 1
    assert value(a, "fedmisp_events_held") == 4
    assert value(a, "fedmisp_attributes_held") == 12  # 3 attributes per event
    assert 0 < value(a, "fedmisp_store_map_used_bytes") <= value(a, "fedmisp_store_map_size_bytes")
    assert value(a, "fedmisp_store_entries", db="events") == 4
    for name in nodes:
        audits[name].close()
        nodes[name].close()


def test_an_element_left_out_of_a_sent_event_is_counted_on_its_line(tmp_path):
    nodes = make_federation(tmp_path, ["a", "b"], [("a", "b")],
                            {("a", "b"): {"push": {"types_exclude": ["ip-dst"]}}})
    path, raw = _event_at_level(tmp_path, 9, 3)
    doc = json.loads(path.read_text())
    doc["Event"]["Attribute"][0].update(type="ip-dst", category="Network activity", value="198.51.100.7")
    path.write_text(json.dumps(doc))
    import_paths(nodes["a"], [path])
    audit = AuditLog(AuditConfig(), nodes["a"].config.home)
    settle(nodes, observers={"a": audit})
    sent = [d for d in audit_lines(nodes["a"].config.home / "audit.log") if d["kind"] == "event"]
    assert [(d["action"], d["elements_left_out"]) for d in sent] == [(SENT, {"push-filter-type": 1})]
    audit.close()
    for node in nodes.values():
        node.close()


def test_the_audit_log_rotates_by_size_and_every_line_stays_whole(tmp_path):
    audit = AuditLog(AuditConfig(file="logs/audit.jsonl", max_bytes=4096, backups=2), tmp_path)
    for i in range(300):
        audit.decided(Decision("csirt", IN, REFUSED, "event", bytes([i % 256]) * 32, f"uuid-{i}", "older"))
    audit.close()
    files = sorted(p.name for p in (tmp_path / "logs").iterdir())
    assert files == ["audit.jsonl", "audit.jsonl.1", "audit.jsonl.2"]
    for name in files:
        path = tmp_path / "logs" / name
        assert path.stat().st_size <= 4096
        assert all(line["reason"] == "older" for line in audit_lines(path))
    # the newest decisions are in the current file
    assert audit_lines(tmp_path / "logs" / "audit.jsonl")[-1]["event_uuid"] == "uuid-299"


def test_two_nodes_in_one_process_keep_separate_metrics(tmp_path):
    nodes = make_federation(tmp_path, ["a", "b"], [("a", "b")])
    first, second = NodeMetrics(nodes["a"]), NodeMetrics(nodes["b"])
    first.decided(Decision("b", IN, STORED, "event"))
    assert value(samples(generate_latest(first.registry).decode()), "fedmisp_records_stored_total",
                 peer="b", kind="event") == 1
    assert value(samples(generate_latest(second.registry).decode()), "fedmisp_records_stored_total",
                 peer="b", kind="event") == 0
    for node in nodes.values():
        node.close()


# --- logs -----------------------------------------------------------------------------------------

@pytest.fixture
def restore_logging():
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    for handler in list(root.handlers):
        if handler not in handlers:
            root.removeHandler(handler)
            handler.close()
    root.setLevel(level)


def test_json_log_lines_parse_and_carry_their_fields(tmp_path, restore_logging):
    configure_logging(LogConfig(format="json", file="fedmisp.log"), tmp_path)
    log = logging.getLogger("fedmisp.gossip")
    log.info("pulled %d event(s) from %s", 2, "csirt", extra={"peer": "csirt", "refused": {"older": 1}})
    log.debug("not at info level")
    try:
        raise ValueError("boom")
    except ValueError:
        log.exception("failed", extra={"event_uuid": "5f1d0c9a-7b2e-4c3d-8e4f-0a1b2c3d4e01"})
    lines = [json.loads(line) for line in (tmp_path / "fedmisp.log").read_text().splitlines()]
    assert [(x["level"], x["logger"], x["message"]) for x in lines] == [
        ("INFO", "fedmisp.gossip", "pulled 2 event(s) from csirt"), ("ERROR", "fedmisp.gossip", "failed")]
    assert lines[0]["peer"] == "csirt" and lines[0]["refused"] == {"older": 1}
    assert lines[0]["time"].endswith("Z")
    assert lines[1]["event_uuid"] == "5f1d0c9a-7b2e-4c3d-8e4f-0a1b2c3d4e01" and "ValueError: boom" in lines[1]["exception"]


def test_text_log_lines_end_with_their_fields_and_the_command_line_overrides_the_config(tmp_path, restore_logging):
    configure_logging(LogConfig(format="json", level="error", file="fedmisp.log"), tmp_path,
                      log_format="text", level="debug")
    logging.getLogger("fedmisp.gossip").debug("pull from %s failed", "bank", extra={"peer": "bank", "retry_in": 4})
    line = (tmp_path / "fedmisp.log").read_text()
    assert line.rstrip().endswith('fedmisp.gossip DEBUG pull from bank failed peer="bank" retry_in=4')


_FIELD_NAMES = st.from_regex(r"[a-z][a-z_]{0,11}", fullmatch=True).filter(
    lambda k: k not in vars(logging.makeLogRecord({})) and k not in ("message", "asctime", "taskName"))
_FIELD_VALUES = st.one_of(st.text(), st.integers(), st.booleans(), st.none(),
                          st.dictionaries(st.text(max_size=8), st.integers(), max_size=3))


@given(message=st.text(), fields=st.dictionaries(_FIELD_NAMES, _FIELD_VALUES, max_size=4))
def test_any_message_and_fields_make_one_json_line_that_reads_back(message, fields):
    record = logging.makeLogRecord({"name": "fedmisp.test", "levelno": logging.WARNING, "levelname": "WARNING",
                                    "msg": message, "args": None, **fields})
    line = JsonFormatter().format(record)
    assert len(line.splitlines()) == 1  # a line break in a message never splits a JSON line
    parsed = json.loads(line)
    assert parsed["message"] == message and parsed["level"] == "WARNING" and parsed["logger"] == "fedmisp.test"
    for key, field_value in fields.items():
        assert parsed[key] == field_value
    text = TextFormatter().format(record)
    assert all(f" {key}=" in text for key in fields)


def test_every_bad_log_audit_and_metrics_setting_is_reported_at_once(tmp_path):
    node, _ = init_home(tmp_path / "n", "Org", "127.0.0.1:0")
    node.close()
    path = tmp_path / "n" / CONFIG_FILE
    path.write_text(path.read_text() + "\n" + tomli_w.dumps({
        "log": {"format": "xml", "level": "loud", "colour": True},
        "audit": {"max_bytes": 1, "enabled": "yes"},
        "metrics": {"require_api_key": "no"},
    }))
    with pytest.raises(ConfigError) as e:
        load_config(tmp_path / "n")
    problems = "\n".join(e.value.problems)
    for expected in ("log.format: 'xml'; accepted: 'text', 'json'", "log.level: 'loud'",
                     "log.colour: unknown setting", "audit.max_bytes: 1; expected an integer from 4096",
                     "audit.enabled: 'yes'; expected true or false", "metrics.require_api_key: 'no'"):
        assert expected in problems
    assert len(e.value.problems) == 6


# --- real node processes ----------------------------------------------------------------------------

def scrape(port: int, key: str | None) -> str:
    request = urllib.request.Request(f"http://127.0.0.1:{port}/node/v1/metrics",
                                     headers={"Authorization": f"Bearer {key}"} if key else {})
    with urllib.request.urlopen(request, timeout=10) as response:
        assert response.headers["Content-Type"].startswith("text/plain; version=0.0.4")
        return response.read().decode()


@pytest.mark.slow
def test_metrics_of_real_nodes_match_what_the_replication_did(tmp_path):
    # a long anti-entropy interval: after the first pulls and notices, nothing moves while scraped
    nodes = configure(tmp_path, ["a", "b"], [("a", "b")], PULL_FILTER, anti_entropy=600)
    events = _events(tmp_path)
    keys = {}
    for name, process in nodes.items():
        path = process.home / CONFIG_FILE
        extra: dict = {"log": {"format": "json", "file": "fedmisp.log"}}
        if name == "a":
            extra["metrics"] = {"require_api_key": False}  # a's operator opened it
        path.write_text(path.read_text() + "\n" + tomli_w.dumps(extra))
        with Node.open(process.home) as node:
            keys[name] = node.create_api_key("read-only", "prometheus")
            if name == "a":
                import_paths(node, sorted(tmp_path.glob("ev*.json")))
    with running(nodes):
        wait_for(lambda: nodes["b"].events() == {events["green"]["uuid"]}, what="green at b")
        scraped: dict[str, dict] = {}

        def settled() -> bool:
            for name in nodes:
                scraped[name] = samples(scrape(nodes[name].port, keys[name]))
            a, b = scraped["a"], scraped["b"]
            return (value(b, "fedmisp_records_refused_total", peer="a", kind="event", reason="pull-filter-tag") == 1
                    and value(a, "fedmisp_peer_bytes_sent_total", peer="b") == value(b, "fedmisp_peer_bytes_received_total", peer="a")
                    and value(b, "fedmisp_peer_bytes_sent_total", peer="a") == value(a, "fedmisp_peer_bytes_received_total", peer="b"))
        # each side counts the sealed bodies it sent and received: once quiet, the two agree
        wait_for(settled, timeout=30, what="both nodes to count the same bytes")
        a, b = scraped["a"], scraped["b"]
        assert value(a, "fedmisp_peer_bytes_sent_total", peer="b") > 0
        assert value(b, "fedmisp_peer_bytes_sent_total", peer="a") > 0
        assert value(b, "fedmisp_records_stored_total", peer="a", kind="event") == 1
        assert value(b, "fedmisp_records_stored_total", peer="a", kind="org") == 1
        assert value(a, "fedmisp_records_stored_total", peer="b", kind="org") == 1
        assert value(a, "fedmisp_records_sent_total", peer="b", kind="event") == 2
        assert value(a, "fedmisp_records_withheld_total", peer="b", kind="event", reason="push-filter-tlp") == 1
        assert value(b, "fedmisp_records_withheld_total", peer="a", kind="event", reason="from-peer") == 1
        assert value(b, "fedmisp_peer_lag_records", peer="a") == 0
        assert value(b, "fedmisp_peer_pull_errors_total", peer="a") == 0
        assert value(b, "fedmisp_pull_duration_seconds_count", peer="a", outcome="ok") >= 1
        assert value(b, "fedmisp_events_held") == 1 and value(a, "fedmisp_events_held") == 4
        assert value(b, "fedmisp_store_entries", db="events") == 1

        # the scrape itself is measured, by route template and status; without a key it is refused,
        # unless the operator opened the endpoint
        assert value(samples(scrape(nodes["a"].port, None)), "fedmisp_events_held") == 4
        with pytest.raises(urllib.error.HTTPError) as refused:
            scrape(nodes["b"].port, None)
        assert refused.value.code == 403 and json.loads(refused.value.read())["name"].startswith("Authentication")
        b = samples(scrape(nodes["b"].port, keys["b"]))
        assert value(b, "fedmisp_api_request_duration_seconds_count",
                     route="/node/v1/metrics", method="GET", status="403") == 1
        assert value(b, "fedmisp_api_request_duration_seconds_count",
                     route="/fed/v1/changes", method="POST", status="200") >= 1
        # a path nobody serves is one label, whatever was asked (no label per guessed URL)
        for path in ("/no/such/path", "/another"):
            with pytest.raises(urllib.error.HTTPError):
                urllib.request.urlopen(f"http://127.0.0.1:{nodes['b'].port}{path}", timeout=10)
        b = samples(scrape(nodes["b"].port, keys["b"]))
        assert value(b, "fedmisp_api_request_duration_seconds_count", route="unmatched", method="GET",
                     status="404") == 2

    b_log = [json.loads(line) for line in (nodes["b"].home / "fedmisp.log").read_text().splitlines()]
    assert all({"time", "level", "logger", "message"} <= line.keys() for line in b_log)
    pulled = [line for line in b_log if line.get("peer") == "a" and "refused" in line]
    assert pulled and pulled[0]["refused"] == {"pull-filter-tag": 1}
    refused = [d for d in audit_lines(nodes["b"].home / "audit.log") if d["action"] == REFUSED]
    assert [(d["peer"], d["event_uuid"], d["reason"]) for d in refused] == [
        ("a", events["unwanted"]["uuid"], "pull-filter-tag")]
    withheld = [d for d in audit_lines(nodes["a"].home / "audit.log") if d["action"] == WITHHELD and d["peer"] == "b"]
    assert {(d["event_uuid"], d["reason"]) for d in withheld} == {
        (events["red"]["uuid"], "push-filter-tlp"), (events["local"]["uuid"], "hop-budget")}


@pytest.mark.slow
def test_a_reload_switches_the_log_to_json_lines_in_a_file_and_moves_the_audit_log(tmp_path):
    nodes = configure(tmp_path, ["a", "b"], [("a", "b")], anti_entropy=600)
    _, first = _event_at_level(tmp_path, 1, 3)
    with Node.open(nodes["a"].home) as node:
        import_paths(node, [tmp_path / "ev1.json"])
        key = node.create_api_key("publisher", "test")
    config = nodes["a"].home / CONFIG_FILE
    with running(nodes):
        wait_for(lambda: nodes["b"].events() == {first["uuid"]}, what="the first event at b")
        config.write_text(config.read_text() + "\n" + tomli_w.dumps({
            "log": {"format": "json", "file": "logs/node.jsonl"}, "audit": {"file": "logs/audit.jsonl"}}))
        subprocess.run([sys.executable, "-m", "fedmisp", "reload", "--home", str(nodes["a"].home)], check=True,
                       capture_output=True, timeout=30)
        log_file = nodes["a"].home / "logs" / "node.jsonl"
        wait_for(lambda: log_file.exists() and "reloaded" in log_file.read_text(), what="the reload in the JSON log")
        line = json.loads(log_file.read_text().splitlines()[-1])
        assert line["logger"] == "fedmisp.server" and line["peers"] == 1
        # a new event through the API: b is told, pulls, and a's decision goes to the new audit file
        _, second = _event_at_level(tmp_path, 2, 3)
        request = urllib.request.Request(f"http://127.0.0.1:{nodes['a'].port}/events/add",
                                         data=(tmp_path / "ev2.json").read_bytes(), method="POST",
                                         headers={"Authorization": key, "Content-Type": "application/json"})
        urllib.request.urlopen(request, timeout=30).read()
        wait_for(lambda: second["uuid"] in nodes["b"].events(), what="the second event at b")
    moved = audit_lines(nodes["a"].home / "logs" / "audit.jsonl")
    assert [(d["action"], d["peer"]) for d in moved if d.get("event_uuid") == second["uuid"]] == [(SENT, "b")]
    assert second["uuid"] not in (nodes["a"].home / "audit.log").read_text()
    assert "reloaded" not in nodes["a"].log.read_text()  # the text log on standard error stopped at the reload
