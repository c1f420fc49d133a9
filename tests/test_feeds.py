"""MISP feeds: one node serves a feed over HTTP, another (a real process, or the CLI) consumes it."""
from __future__ import annotations

import copy
import json
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import re

import pytest
import tomli_w
from hypothesis import given, settings, strategies as st
import tomllib

from factories import ORG, event
from nodes import configure, running, wait_for
from fedmisp.node.config import ConfigError, load_config
from fedmisp.store.store import Store


def _event(seed: int, distribution: int, tags: list[str], published: bool = True) -> dict:
    raw = copy.deepcopy(event(seed=seed, attributes=5, objects=0))
    e = raw["Event"]
    e["distribution"] = str(distribution)
    e["published"] = published
    e["Tag"] = [{"name": t} for t in tags]
    for a in e["Attribute"]:
        a["distribution"] = "5"
        a.pop("Tag", None)
    return raw


def _events(folder: Path) -> dict[str, dict]:
    """The publishing node's events, by what the feed must do with them."""
    folder.mkdir()
    docs = {
        "green": _event(1, 3, ["tlp:green"]),
        "community": _event(2, 1, ["tlp:green"]),
        "red": _event(3, 3, ["tlp:red"]),
        "org_only": _event(4, 0, ["tlp:green"]),
        "unpublished": _event(5, 3, ["tlp:green"], published=False),
    }
    # one attribute of the green event is for the organisation only: the feed leaves it out
    docs["green"]["Event"]["Attribute"][1]["distribution"] = "0"
    for name, doc in docs.items():
        (folder / f"{name}.json").write_text(json.dumps(doc))
    return docs


def _add_config(home: Path, extra: dict) -> None:
    path = home / "fedmisp.toml"
    path.write_text(tomli_w.dumps({**tomllib.loads(path.read_text()), **extra}))


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "fedmisp", *args], capture_output=True, text=True, timeout=300)


def _held(home: Path, event_uuid: str) -> tuple[dict, list[dict]] | None:
    with Store(home / "store", readonly=True) as store:
        found = store.revision(event_uuid)
        return None if found is None else (found[0].body["event"], found[1])


def _get(url: str, key: str | None = None) -> tuple[int, bytes]:
    request = urllib.request.Request(url, headers={"Authorization": key} if key else {})
    try:
        with urllib.request.urlopen(request, timeout=30) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


@pytest.mark.slow
def test_a_feed_served_by_one_node_gives_another_exactly_what_its_filter_and_the_levels_allow(tmp_path):
    nodes = configure(tmp_path, ["pub", "sub"], [])
    pub, sub = nodes["pub"], nodes["sub"]
    base = f"http://127.0.0.1:{pub.port}/feed"
    _add_config(pub.home, {"served_feed": [
        {"name": "public", "access": "open"},  # the default filter: tlp:red stays home
        {"name": "partners", "filter": {"orgs_include": ["Example CERT"], "tlp_ceiling": "red"}},
    ]})
    _add_config(sub.home, {"feed": [{"name": "from-pub", "url": f"{base}/public", "interval_seconds": 10}]})
    docs = _events(tmp_path / "events")
    uuids = {name: doc["Event"]["uuid"] for name, doc in docs.items()}
    assert _cli("import", "--home", str(pub.home), str(tmp_path / "events")).returncode == 0
    key = _cli("apikey", "create", "--home", str(pub.home), "--role", "read-only").stdout.strip()
    with running(nodes):
        status, body = _get(f"{base}/public/manifest.json")
        manifest = json.loads(body)
        assert status == 200 and set(manifest) == {uuids["green"], uuids["community"]}
        entry = manifest[uuids["green"]]
        assert {"info", "Orgc", "Tag", "date", "threat_level_id", "analysis", "timestamp"} <= set(entry)
        assert entry["Tag"] == [{"name": "tlp:green"}]
        # the event files: the level-0 attribute left out, a level-1 event published as 0 (one hop)
        status, body = _get(f"{base}/public/{uuids['green']}.json")
        green = json.loads(body)["Event"]
        left_out = docs["green"]["Event"]["Attribute"][1]["uuid"]
        assert status == 200 and len(green["Attribute"]) == 4 and left_out not in {a["uuid"] for a in green["Attribute"]}
        community = json.loads(_get(f"{base}/public/{uuids['community']}.json")[1])["Event"]
        assert community["distribution"] == "0"
        assert _get(f"{base}/public/{uuids['red']}.json")[0] == 404
        assert _get(f"{base}/public/{uuids['org_only']}.json")[0] == 404
        hashes = _get(f"{base}/public/hashes.csv")[1].decode().splitlines()
        assert len(hashes) == 9 and all(line.split(",")[1] in manifest for line in hashes)
        # a feed that is not open wants an API key of the node; its filter lets tlp:red through
        status, body = _get(f"{base}/partners/manifest.json")
        assert status == 403 and json.loads(body)["saved"] is False
        status, body = _get(f"{base}/partners/manifest.json", key)
        assert status == 200 and set(json.loads(body)) == {uuids["green"], uuids["community"], uuids["red"]}
        assert _get(f"{base}/nosuch/manifest.json")[0] == 404

        wait_for(lambda: sub.events() == {uuids["green"], uuids["community"]}, what="sub to fetch the feed")
        header, elements = _held(sub.home, uuids["green"])
        assert left_out not in {e["uuid"] for e in elements} and len(elements) == 4
        assert _held(sub.home, uuids["community"])[0]["distribution"] == 0  # goes no further than sub


@pytest.mark.slow
def test_correlation_only_consumption_fetches_only_what_changed(tmp_path):
    nodes = configure(tmp_path, ["pub", "corr"], [])
    pub, corr = nodes["pub"], nodes["corr"]
    _add_config(pub.home, {"served_feed": [{"name": "public", "access": "open"}]})
    _add_config(corr.home, {"feed": [{"name": "osint", "url": f"http://127.0.0.1:{pub.port}/feed/public",
                                      "mode": "correlation-only"}]})
    docs = _events(tmp_path / "events")
    uuids = {name: doc["Event"]["uuid"] for name, doc in docs.items()}
    assert _cli("import", "--home", str(pub.home), str(tmp_path / "events")).returncode == 0
    value = docs["green"]["Event"]["Attribute"][0]["value"]
    with running({"pub": pub}):
        first = _cli("feed", "fetch", "--home", str(corr.home))
        assert first.returncode == 0, first.stderr
        assert "2 listed, 0 unchanged since the last fetch, 2 fetched: 2 event(s) stored" in first.stdout
        # the events feed correlation only: never shown, but matched
        assert corr.events() == set()
        with Store(corr.home / "store", readonly=True) as store:
            assert set(store.event_uuids(include_correlation_only=True)) == {uuids["green"], uuids["community"]}
        found = json.loads(_cli("correlate", "--home", str(corr.home), value, "--json",
                                "--no-warninglists").stdout)
        assert [(m["correlation_only"], m["source"]) for m in found["matches"]] == [(True, "osint")]
        # nothing changed: nothing downloaded
        again = _cli("feed", "fetch", "--home", str(corr.home), "osint")
        assert "2 unchanged since the last fetch, 0 fetched" in again.stdout
        # a newer revision of one event on the publisher: only that one is fetched
        newer = copy.deepcopy(docs["green"])
        newer["Event"]["timestamp"] = str(int(newer["Event"]["timestamp"]) + 60)
        newer["Event"]["info"] = "updated"
        (tmp_path / "newer.json").write_text(json.dumps(newer))
        assert _cli("import", "--home", str(pub.home), str(tmp_path / "newer.json")).returncode == 0
        third = _cli("feed", "fetch", "--home", str(corr.home))
        assert "1 unchanged since the last fetch, 1 fetched: 1 event(s) stored" in third.stdout
        assert _held(corr.home, uuids["green"])[0]["info"] == "updated"
    unknown = _cli("feed", "fetch", "--home", str(corr.home), "nosuch")
    assert unknown.returncode == 2 and "feeds: osint" in unknown.stderr



@pytest.mark.slow
def test_a_feed_added_to_a_running_node_is_fetched_after_reload(tmp_path):
    nodes = configure(tmp_path, ["pub", "sub"], [])
    pub, sub = nodes["pub"], nodes["sub"]
    _add_config(pub.home, {"served_feed": [{"name": "public", "access": "open"}]})
    docs = _events(tmp_path / "events")
    assert _cli("import", "--home", str(pub.home), str(tmp_path / "events")).returncode == 0
    with running(nodes):
        assert sub.events() == set()
        _add_config(sub.home, {"feed": [{"name": "pub", "url": f"http://127.0.0.1:{pub.port}/feed/public"}]})
        assert _cli("reload", "--home", str(sub.home)).returncode == 0
        wait_for(lambda: sub.events() == {docs["green"]["Event"]["uuid"], docs["community"]["Event"]["uuid"]},
                 what="sub to fetch the feed added by the reload")
        assert "feed pub: 2 listed" in sub.log.read_text()
        status = sub.operator("/node/v1/feeds")
        assert status["fetched"]["pub"]["mode"] == "full" and "2 event(s) stored" in \
            status["fetched"]["pub"]["last_fetch"]["summary"]
        assert pub.operator("/node/v1/feeds") == {"served": ["public"],
                                                                                     "fetched": {}}

def test_a_folder_feed_respects_its_size_limits_and_names_what_it_refused(tmp_path, node):
    import asyncio
    from fedmisp.export.misp import events, write_feed
    from fedmisp.node.feed_fetch import FeedError, fetch_feed
    from fedmisp.node.feed_config import FeedSource
    from fedmisp.node.importer import import_paths
    from fedmisp.store.writer import Writer
    source, _ = __import__("fedmisp.node.home", fromlist=["init_home"]).init_home(
        tmp_path / "source", "Source", "127.0.0.1:0")
    big = event(seed=9, attributes=300, objects=0)
    small = event(seed=10, attributes=2, objects=0)
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "big.json").write_text(json.dumps(big))
    (tmp_path / "in" / "small.json").write_text(json.dumps(small))
    import_paths(source, [tmp_path / "in"])
    write_feed(events(source.store, include_local=False), tmp_path / "feed")
    source.close()
    (tmp_path / "feed" / f"{small['Event']['uuid']}.json").write_text("{not json")

    async def fetch(feed: FeedSource):
        loop = asyncio.get_running_loop()
        with Writer(node.store) as writer:
            return await fetch_feed(node, feed, lambda ev: asyncio.wrap_future(writer.submit(ev)),
                                    lambda fn, *a: loop.run_in_executor(None, fn, *a), None)
    report = asyncio.run(fetch(FeedSource("local", "", tmp_path / "feed", max_event_bytes=20_000)))
    assert report.events_stored == 0 and report.files == 1
    assert len(report.failed) == 1 and "feed.max_event_bytes" in report.failed[0]
    assert len(report.refused) == 1 and "invalid JSON" in report.refused[0]
    # a download that failed is tried again; the refused file only once it changes
    report = asyncio.run(fetch(FeedSource("local", "", tmp_path / "feed")))
    assert report.events_stored == 1 and report.skipped == 1
    with pytest.raises(FeedError, match="max_manifest_bytes"):
        asyncio.run(fetch(FeedSource("local", "", tmp_path / "feed", max_manifest_bytes=10)))
    # a feed's filter leaves out the events it refuses; a file must hold the event it is listed for
    from fedmisp.policy.model import SyncFilter
    report = asyncio.run(fetch(FeedSource("filtered", "", tmp_path / "feed",
                                          filter=SyncFilter(orgs_exclude=(ORG["name"],)))))
    assert report.filtered == 1 and report.events_stored == 0
    other = "0b1c2d3e-4f5a-4b6c-8d7e-9f0a1b2c3d4e"
    manifest = json.loads((tmp_path / "feed" / "manifest.json").read_text())
    manifest[other] = manifest[big["Event"]["uuid"]]
    (tmp_path / "feed" / "manifest.json").write_text(json.dumps(manifest))
    (tmp_path / "feed" / f"{other}.json").write_text(json.dumps(big))
    report = asyncio.run(fetch(FeedSource("local", "", tmp_path / "feed")))
    assert report.files == 1 and report.refused == [
        f"{tmp_path / 'feed'}/{other}.json: expected the one event {other} the manifest lists it for"]


def test_feed_settings_are_checked_with_the_field_and_what_is_accepted(tmp_path, node):
    _add_config(node.config.home, {
        "served_feed": [{"name": "x", "access": "public", "filter": {"tlp_ceiling": "purple"}},
                        {"name": "x"}],
        "feed": [{"name": "a", "url": "ftp://host/feed"}, {"name": "b", "url": "http://h/f", "path": "f"},
                 {"name": "c", "path": "f", "mode": "mirror", "interval_seconds": 1, "max_event_bytes": 0,
                  "filter": {"to_ids_only": True, "tags_exclude": "tlp:red"}}],
    })
    with pytest.raises(ConfigError) as e:
        load_config(node.config.home)
    text = str(e.value)
    for expected in ("served_feed 'x'.access: 'public'; accepted: apikey, open",
                     "served_feed 'x'.filter.tlp_ceiling: 'purple'", "served_feed 'x'.name: used by another",
                     "feed 'a'.url: 'ftp://host/feed'", "feed 'b': give exactly one of url",
                     "feed 'c'.mode: 'mirror'; accepted: full, correlation-only",
                     "feed 'c'.interval_seconds: 1", "feed 'c'.max_event_bytes: 0",
                     "feed 'c'.filter.to_ids_only: not applied to fetched feeds",
                     "feed 'c'.filter.tags_exclude: expected a list"):
        assert expected in text


def test_a_served_feed_carries_no_sharing_group_data_no_deleted_event_and_is_what_export_writes(tmp_path, capsys):
    from fedmisp.gossip import sharing_groups as sg
    from fedmisp.gossip.replica import Replica
    from fedmisp.node.cli import main
    from fedmisp.node.feeds import feed_events
    from fedmisp.node.home import Node, init_home
    from fedmisp.node.importer import import_paths
    from fedmisp.store.mutations import tombstone
    node, _ = init_home(tmp_path / "node", "Publisher", "127.0.0.1:0")
    _add_config(node.config.home, {"served_feed": [{"name": "public", "access": "open"}]})
    node.close()
    node = Node.open(tmp_path / "node")
    group = sg.create(node.store, node.identity, node.config.org_uuid, "partners",
                      {node.config.org_uuid: True, "9a0c8f6e-5d4b-4c3a-9e2f-1a0b9c8d7e6f": False})
    docs = {"kept": _event(20, 3, ["tlp:green"]), "group": _event(21, 4, ["tlp:green"]),
            "deleted": _event(22, 3, ["tlp:green"])}
    docs["group"]["Event"]["sharing_group_uuid"] = group.uuid
    # one attribute of the kept event is bound to the group: the feed leaves it out
    docs["kept"]["Event"]["Attribute"][0].update(distribution="4", sharing_group_uuid=group.uuid)
    folder = tmp_path / "in"
    folder.mkdir()
    for name, doc in docs.items():
        (folder / f"{name}.json").write_text(json.dumps(doc))
    assert import_paths(node, [folder]).events_stored == 3
    node.store.write_events([tombstone(node.store, node.identity, docs["deleted"]["Event"]["uuid"])])
    feed = node.config.served_feeds[0]
    published = {e["Event"]["uuid"]: e for e in feed_events(Replica(node), feed)}
    assert set(published) == {docs["kept"]["Event"]["uuid"]}
    kept = published[docs["kept"]["Event"]["uuid"]]["Event"]
    assert [a["uuid"] for a in kept["Attribute"]] == [a["uuid"] for a in docs["kept"]["Event"]["Attribute"][1:]]
    assert all("sharing_group_uuid" not in a for a in kept["Attribute"])
    node.close()
    # `fedmisp export --format feed --feed public` writes the same feed as a folder
    assert main(["export", "--home", str(tmp_path / "node"), "--format", "feed", "--feed", "public",
                 "--out", str(tmp_path / "out")]) == 0
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert set(manifest) == set(published)
    assert json.loads((tmp_path / "out" / f"{kept['uuid']}.json").read_text()) == published[kept["uuid"]]
    assert main(["export", "--home", str(tmp_path / "node"), "--format", "feed", "--feed", "nosuch",
                 "--out", str(tmp_path / "out")]) == 2
    assert "served feeds: public" in capsys.readouterr().err


@settings(max_examples=100, deadline=None)
@given(st.dictionaries(st.uuids().map(str), st.integers(min_value=0, max_value=2**40), max_size=20),
       st.text(), st.sampled_from(["tlp:green", "osint:source-type=\"blog\""]))
def test_a_manifest_written_for_events_reads_back_as_their_timestamps(stamps, info, tag):
    from fedmisp.export.misp import manifest_entry
    from fedmisp.node.feed_fetch import parse_manifest
    manifest = {u.upper(): manifest_entry({"Event": {
        "Orgc": {"name": "O", "uuid": u}, "Tag": [{"name": tag}], "info": info, "date": "2024-01-01",
        "analysis": "0", "threat_level_id": "4", "timestamp": str(t)}}) for u, t in stamps.items()}
    assert parse_manifest(json.dumps(manifest).encode(), "m") == stamps


@pytest.mark.parametrize("text, expected", [
    (b"[]", "expected a map of event uuid"),
    (b'{"../../etc/passwd": {"timestamp": "1"}}', "is not an event uuid"),
    (b'{"5f4c3b2a-1d0e-4f9a-8b7c-6d5e4f3a2b1c": {"timestamp": "soon"}}', "timestamp: 'soon'"),
    (b"\xff", "not UTF-8"),
    (b"{", "invalid JSON at line 1"),
])
def test_a_bad_manifest_is_refused_whole_naming_what_is_wrong(text, expected):
    from fedmisp.node.feed_fetch import FeedError, parse_manifest
    with pytest.raises(FeedError, match=re.escape(expected)):
        parse_manifest(text, "feed x")


@pytest.mark.slow
def test_a_served_feed_carries_the_reports_and_analyst_data_its_policy_allows_and_a_fetch_keeps_them(tmp_path):
    """The MISP 2.5 round-trip event (tests/test_misp25_roundtrip.py) in a served feed: exactly the
    reports and analyst items a peer with the feed's filter would pull (no level 0, nothing in a
    sharing group, nothing on a withheld target), each at the level its reader holds it at; the
    node that fetches the feed keeps every one of them, signed by itself (decision 0001)."""
    from test_misp25_roundtrip import build, facts
    nodes = configure(tmp_path, ["pub", "sub"], [])
    pub, sub = nodes["pub"], nodes["sub"]
    base = f"http://127.0.0.1:{pub.port}/feed/public"
    _add_config(pub.home, {"served_feed": [{"name": "public", "access": "open"}]})
    _add_config(sub.home, {"feed": [{"name": "from-pub", "url": base, "interval_seconds": 10}]})
    ev, uuids, reach = build("0b0b0b0b-0000-4000-8000-000000000002")
    (tmp_path / "event.json").write_text(ev.to_json())
    assert _cli("import", "--home", str(pub.home), str(tmp_path / "event.json")).returncode == 0
    with Store(pub.home / "store", readonly=True) as store:
        pub_org = store.export_event(ev.uuid)["Event"]["Orgc"]["uuid"]
        published = facts(store.export_event(ev.uuid), pub_org)
    in_groups = {uuids[n] for n in ("attr_sg", "rep_sg", "n_sg")}
    allowed = {u for u, where in reach.items() if "b" in where} - in_groups  # one hop, no group
    downgraded = {uuids[n]: level for n, level in (("attr1", "0"), ("rep1", "0"), ("n_e1", "0"),
                                                        ("n_rep5", "1"))}
    with running(nodes):
        status, body = _get(f"{base}/{ev.uuid}.json")
        assert status == 200
        served = facts(json.loads(body), pub_org)
        assert set(served) == allowed, {k for k, v in uuids.items() if v in set(served) ^ allowed}
        for u in allowed:
            want = list(published[u])
            if u in downgraded:  # where each kind's facts() tuple has its distribution
                want[{"Attribute": 5, "Object": 3}.get(want[0], 4)] = downgraded[u]
            assert list(served[u]) == want, (u, served[u], want)
        wait_for(lambda: ev.uuid in sub.events(), what="sub to fetch the feed")
    with Store(sub.home / "store", readonly=True) as store:
        kept = facts(store.export_event(ev.uuid), pub_org)
        assert kept == served
        assert store.check_integrity() == []
