"""A hostile peer (tests/hostile.py: the real signed /fed/v1 protocol with crafted replies) against
real node processes on 127.0.0.1 (issue 13 items 2 and 3): what it claims is checked against its
domain, and it holds only its own pull, which ends by the pull's limits with the reason reported."""
from __future__ import annotations

import copy
import json
import subprocess
import sys
from pathlib import Path

import pytest
import tomli_w

from fedmisp.model.misp import ImportDefaults, parse_event
from fedmisp.model.records import open_record
from fedmisp.model.revision import sign_event
from fedmisp.node.config import CONFIG_FILE
from fedmisp.node.home import Node

from factories import event
from hostile import HostilePeer
from nodes import configure, running, wait_for


def _event_file(folder: Path, name: str, seed: int, level: int) -> str:
    folder.mkdir(exist_ok=True)
    raw = copy.deepcopy(event(seed=seed, attributes=4, objects=0))
    raw["Event"]["distribution"] = str(level)
    for a in raw["Event"]["Attribute"]:
        a["distribution"] = "5"
    (folder / f"{name}.json").write_text(json.dumps(raw))
    return raw["Event"]["uuid"]


def _import(home: Path, path: Path) -> None:
    subprocess.run([sys.executable, "-m", "fedmisp", "import", "--home", str(home), str(path)],
                   check=True, capture_output=True, timeout=300)


def _gossip(home: Path, **settings) -> None:
    """Add to the [gossip] table `configure` wrote."""
    path = home / CONFIG_FILE
    text = path.read_text()
    for key, value in settings.items():
        text = text.replace("[gossip]\n", f"[gossip]\n{tomli_w.dumps({key: value}).strip()}\n", 1)
    path.write_text(text)


def _status(node, peer: str) -> dict:
    return node.operator()[peer]


@pytest.mark.slow
def test_an_event_offered_at_level_minus_1_is_refused_and_never_passes_its_hop_budget(tmp_path):
    # A's community-only event may reach C (one hop, held there at 0) and never D; A offers it at
    # -1 (under every max_distribution cap), which C relayed at -1 before levels were checked.
    nodes = configure(tmp_path, ["a", "c", "d"], [("a", "c"), ("c", "d")])
    folder = tmp_path / "events"
    community = _event_file(folder, "community", 1, 1)
    everyone = _event_file(folder, "all", 2, 3)
    _import(nodes["a"].home, folder)

    def lift(since, limit, reply):
        for change in reply["changes"]:
            if "event_level" in change and open_record(change["record"]).body["event"]["uuid"] == community:
                change["event_level"] = -1
                change["elements"] = -1
        return reply

    a = nodes.pop("a")
    with HostilePeer(a.home, a.port, craft=lift) as hostile, running(nodes):
        # the level-3 event of the same page reaches D: C has decided on the other one by then
        wait_for(lambda: everyone in nodes["d"].events(), timeout=60, what="the level-3 event at D")
        assert community not in nodes["d"].events()
        assert community not in nodes["c"].events()
        wait_for(lambda: _status(nodes["c"], "a")["refused"].get("malformed", 0) >= 1, timeout=30,
                 what="C to report the lifted event as malformed")
        assert hostile.changes_requests >= 1
    for name in ("c", "d"):
        assert nodes[name].integrity() == []


def _revisions(h_home: Path) -> tuple[list, dict[bytes, bytes], str]:
    """Two revisions of one event, signed by H's own key (the older one, then the newer), and the
    bodies of the newer."""
    node = Node.open(h_home)
    try:
        org = {"uuid": node.config.org_uuid, "name": node.config.org_name}
        defaults = ImportDefaults(org_uuid=org["uuid"], org_name=org["name"], now=1_700_000_000)
        out = []
        for ts in (1_700_000_500, 1_700_000_600):
            raw = copy.deepcopy(event(seed=77, attributes=3, objects=0, timestamp=ts))["Event"]
            raw["Orgc"] = org
            out.append(sign_event(node.identity, parse_event(raw, defaults)))
    finally:
        node.close()
    return out, {e.digest: e.body for e in out[1].elements}, out[0].uuid  # it holds the newer


def _offer(seq: int, signed) -> dict:
    return {"seq": seq, "record": signed.record.wire(), "event_level": 2, "elements": 2}


@pytest.mark.slow
@pytest.mark.parametrize("behaviour", ["empty pages that say more", "one event twice in a page",
                                       "a page whose more is not a bool"])
def test_a_hostile_peer_holds_only_its_own_pull_and_the_status_says_why_it_ended(tmp_path, behaviour):
    nodes = configure(tmp_path, ["n", "h", "g"], [("n", "h"), ("n", "g")], anti_entropy=600)
    # empty pages: a deadline far off, so only the progress rule can end the pull in the wait
    _gossip(nodes["n"].home, pull_deadline_seconds=600 if behaviour == "empty pages that say more" else 15)
    craft, bodies, twins = None, None, None
    if behaviour == "empty pages that say more":
        def craft(since, limit, reply):
            return {"changes": [], "last_seq": since + limit, "more": True, "head": 2 ** 62}
    elif behaviour == "one event twice in a page":
        (older, newer), bodies, twins = _revisions(nodes["h"].home)

        def craft(since, limit, reply):
            changes = [_offer(1, newer), _offer(2, older)] if since < 2 else []
            return {"changes": changes, "last_seq": max(since, 2), "more": False, "head": 2}
    else:
        def craft(since, limit, reply):
            return {"changes": [], "last_seq": since, "more": "yes", "head": since}
    h = nodes.pop("h")
    with HostilePeer(h.home, h.port, craft=craft, bodies=bodies) as hostile, running(nodes):
        wait_for(lambda: hostile.changes_requests >= 1, timeout=30, what="n to pull from the hostile peer")
        good = _event_file(tmp_path / "good", "good", 5, 3)
        _import(nodes["g"].home, tmp_path / "good")  # g announces it (its log moved): n pulls g at once
        wait_for(lambda: good in nodes["n"].events(), timeout=30, what="the good peer's event at n")
        if behaviour == "one event twice in a page":
            wait_for(lambda: twins in nodes["n"].events(), timeout=30, what="the newer twin at n")
            status = _status(nodes["n"], "h")
            assert status["refused"] == {"older": 1} and status["errors"] == 0
            assert hostile.bodies_requests <= 2  # fetched once, not in a loop
        else:
            wait_for(lambda: _status(nodes["n"], "h")["errors"] >= 1, timeout=120,
                     what="the hostile pull to end")
            status = _status(nodes["n"], "h")
            requests = hostile.changes_requests
            if behaviour == "empty pages that say more":
                # 1,000 empty pages (NO_PROGRESS_PAGES), or 60 s without progress: not the deadline
                assert status["stopped"] == "no-progress"
                assert status["last_error"].startswith("no-progress:")
            else:
                assert status["stopped"] == "refused-reply"
                assert "more: 'yes' is not true or false" in status["last_error"]
                # refused once: one changes request per failed pull, no retry within it. No next
                # pull comes meanwhile: anti-entropy is 600 s, and a peer whose pull broke a rule
                # waits for its backoff even when a notice or an answer would pull it at once
                assert requests == status["errors"], (requests, status["errors"])
            stopped = [line for line in map(json.loads, (nodes["n"].home / "audit.log").read_text().splitlines())
                       if line["peer"] == "h" and line["direction"] == "in" and line["action"] == "refused"]
            assert stopped and {line["kind"] for line in stopped} == {"pull"}
            assert {line["reason"] for line in stopped} == {status["stopped"]}
            assert "Traceback" not in nodes["n"].log.read_text()
        printed = subprocess.run([sys.executable, "-m", "fedmisp", "status", "--home", str(nodes["n"].home)],
                                 capture_output=True, text=True, timeout=60).stdout
        if behaviour != "one event twice in a page":
            assert status["last_error"][:30] in printed  # `fedmisp status` says why too


@pytest.mark.slow
def test_a_peer_that_answers_each_page_slowly_holds_only_its_own_pull_until_its_deadline(tmp_path):
    # Each page just before the read timeout would hold a pull for ever; the deadline ends it, and
    # meanwhile the good peer's event arrives (pulls from different peers run at once).
    nodes = configure(tmp_path, ["n", "h", "g"], [("n", "h"), ("n", "g")], anti_entropy=600)
    deadline = 30
    _gossip(nodes["n"].home, pull_deadline_seconds=deadline)

    def craft(since, limit, reply):
        return {"changes": [], "last_seq": since + 1, "more": True, "head": 2 ** 62}

    h = nodes.pop("h")
    with HostilePeer(h.home, h.port, craft=craft, delay=2.0) as hostile, running(nodes):
        wait_for(lambda: hostile.changes_requests >= 1, timeout=30, what="n to pull from the slow peer")
        good = _event_file(tmp_path / "good", "good", 6, 3)
        _import(nodes["g"].home, tmp_path / "good")
        # well before the slow pull's deadline (with one pull at a time it would wait for it)
        wait_for(lambda: good in nodes["n"].events(), timeout=deadline - 5, what="the good peer's event at n")
        assert _status(nodes["n"], "h")["errors"] == 0  # the slow pull is still running
        wait_for(lambda: _status(nodes["n"], "h")["errors"] >= 1, timeout=deadline + 30,
                 what="the slow pull to end by its deadline")
        status = _status(nodes["n"], "h")
        assert status["stopped"] == "deadline" and status["last_error"].startswith("deadline: the pull ran")
        assert status["retry_in"] > 0
        # the audit log has a line for the stopped pull, of kind "pull", naming the rule
        stopped = [line for line in map(json.loads, (nodes["n"].home / "audit.log").read_text().splitlines())
                   if line["peer"] == "h" and line.get("reason") == "deadline"]
        assert stopped and {line["kind"] for line in stopped} == {"pull"}
        assert {line["action"] for line in stopped} == {"refused"}


@pytest.mark.slow
def test_a_peer_whose_pull_failed_is_pulled_again_when_its_backoff_ends_not_an_anti_entropy_period_later(tmp_path):
    # h's first reply is malformed, then it answers as a real node would, and never sends a
    # notice: only the retry at the end of the backoff (2 s at the first failure) can bring its
    # event to n within the wait; anti-entropy is 600 s
    nodes = configure(tmp_path, ["n", "h"], [("n", "h")], anti_entropy=600)
    h = nodes.pop("h")
    wanted = _event_file(tmp_path / "h", "h", 7, 3)
    _import(h.home, tmp_path / "h")
    seen = []

    def craft(since, limit, reply):
        seen.append(since)
        return {"changes": [], "last_seq": since, "more": "yes", "head": since} if len(seen) == 1 else reply
    with HostilePeer(h.home, h.port, craft=craft) as hostile, running(nodes):
        wait_for(lambda: _status(nodes["n"], "h")["errors"] >= 1, timeout=30, what="the first pull to fail")
        wait_for(lambda: wanted in nodes["n"].events(), timeout=60, what="h's event at n after the backoff")
        assert hostile.changes_requests >= 2
        assert _status(nodes["n"], "h")["stopped"] == ""
