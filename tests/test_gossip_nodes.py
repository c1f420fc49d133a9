"""Replication between real node processes on 127.0.0.1: topologies, faults, catch-up."""
from __future__ import annotations

import copy
import json
import random
import subprocess
import sys
import time
from pathlib import Path

import pytest

from factories import event
from nodes import configure, running, wait_for


def _events(tmp_path: Path, levels: dict[str, int], attributes: int = 4) -> dict[str, str]:
    """One event file per name at the given level; returns name -> event uuid."""
    out = {}
    folder = tmp_path / "events"
    folder.mkdir(exist_ok=True)
    for i, (name, level) in enumerate(levels.items()):
        raw = copy.deepcopy(event(seed=1000 + i, attributes=attributes, objects=0))
        raw["Event"]["distribution"] = str(level)
        for a in raw["Event"]["Attribute"]:
            a["distribution"] = "5"
        (folder / f"{name}.json").write_text(json.dumps(raw))
        out[name] = raw["Event"]["uuid"]
    return out


def _import(home: Path, path: Path) -> None:
    subprocess.run([sys.executable, "-m", "fedmisp", "import", "--home", str(home), str(path)],
                   check=True, capture_output=True, timeout=300)


@pytest.mark.slow
def test_a_line_of_five_holds_each_level_exactly_where_the_table_says(tmp_path):
    names = ["n0", "n1", "n2", "n3", "n4"]
    nodes = configure(tmp_path, names, list(zip(names, names[1:])))
    ev = _events(tmp_path, {"org_only": 0, "community": 1, "connected": 2, "all": 3})
    _import(nodes["n0"].home, tmp_path / "events")
    expected = {
        "n0": set(ev.values()),
        "n1": {ev["community"], ev["connected"], ev["all"]},
        "n2": {ev["connected"], ev["all"]},
        "n3": {ev["all"]},
        "n4": {ev["all"]},
    }
    with running(nodes):
        wait_for(lambda: all(nodes[n].events() == expected[n] for n in names), what="the line to settle")
        time.sleep(3)  # another anti-entropy round brings nothing more
        assert {n: nodes[n].events() for n in names} == expected
    for n in names:
        assert nodes[n].integrity() == []


@pytest.mark.slow
def test_a_ring_and_a_filter_on_one_hop(tmp_path):
    names = ["a", "b", "c", "d"]
    edges = [("a", "b"), ("b", "c"), ("c", "d"), ("d", "a")]
    # b keeps tlp:red... the default push filter keeps tlp:red from every peer; a lets it go to b only
    nodes = configure(tmp_path, names, edges, {("a", "b"): {"push": {"tlp_ceiling": "red"}}})
    ev = _events(tmp_path, {"red": 3, "green": 3})
    doc = json.loads((tmp_path / "events" / "red.json").read_text())
    doc["Event"]["Tag"] = [{"name": "tlp:red"}]
    (tmp_path / "events" / "red.json").write_text(json.dumps(doc))
    _import(nodes["a"].home, tmp_path / "events")
    with running(nodes):
        wait_for(lambda: all(ev["green"] in nodes[n].events() for n in names), what="green everywhere")
        wait_for(lambda: ev["red"] in nodes["b"].events(), what="red at b")
        time.sleep(3)
        assert ev["red"] not in nodes["c"].events() and ev["red"] not in nodes["d"].events()


@pytest.mark.slow
def test_a_stopped_node_catches_up_when_it_comes_back(tmp_path):
    nodes = configure(tmp_path, ["a", "b"], [("a", "b")])
    ev = _events(tmp_path, {"first": 3})
    with running(nodes):
        nodes["b"].stop()
        _import(nodes["a"].home, tmp_path / "events")  # the node is running: import writes beside it
        time.sleep(1)
        assert ev["first"] not in nodes["b"].events()
        nodes["b"].start()
        wait_for(lambda: ev["first"] in nodes["b"].events(), what="b to catch up")


@pytest.mark.slow
def test_sigkill_in_the_middle_of_a_large_pull_resumes_from_the_checkpoint(tmp_path):
    nodes = configure(tmp_path, ["src", "dst"], [("src", "dst")], anti_entropy=1.0)
    # about 90,000 elements: several changes pages (about 20,000 elements each), so that a kill
    # soon after the first stored page lands before the last one
    ev = _events(tmp_path, {f"big{i}": 3 for i in range(60)}, attributes=1500)
    _import(nodes["src"].home, tmp_path / "events")
    rng = random.Random(7)
    held_at_kills = []
    with running(nodes):
        for _ in range(4):
            # kill once the pull is under way: after its first event is stored, at a random moment
            wait_for(lambda: len(nodes["dst"].events()) > len(held_at_kills and held_at_kills[-1] or ()),
                     timeout=60, what="the pull to make progress")
            time.sleep(rng.uniform(0.0, 0.1))
            nodes["dst"].kill()
            held_at_kills.append(nodes["dst"].events())
            assert nodes["dst"].integrity() == []
            if len(held_at_kills[-1]) == len(ev):
                break
            nodes["dst"].start()
        if nodes["dst"].proc is None:
            nodes["dst"].start()
        wait_for(lambda: nodes["dst"].events() == set(ev.values()), timeout=120, what="dst to hold everything")
    assert any(0 < len(h) < len(ev) for h in held_at_kills), f"no kill landed mid-pull: {[len(h) for h in held_at_kills]}"
    assert nodes["dst"].integrity() == []


@pytest.mark.slow
def test_reload_adds_a_peer_without_a_restart_and_keeps_the_old_config_when_the_new_is_broken(tmp_path):
    import urllib.request
    nodes = configure(tmp_path, ["a", "c"], [("a", "c")], anti_entropy=1.0)
    ev = _events(tmp_path, {"shared": 3})
    _import(nodes["a"].home, tmp_path / "events")
    config = nodes["a"].home / "fedmisp.toml"
    good = config.read_text()
    # a forgets c: c's pulls are refused with 403 (an unknown key)
    without_c = good[: good.index("[[peer]]")]
    config.write_text(without_c)
    with running(nodes):
        time.sleep(2.5)
        assert ev["shared"] not in nodes["c"].events()
        status = nodes["c"].operator()
        assert "403" in status["a"]["last_error"] and status["a"]["errors"] >= 1
        # a broken file: reload refuses it, the node keeps serving with the old configuration
        config.write_text(without_c + "\n[[peer]]\nname = 'c'\nurl = 'nowhere'\n")
        cli = subprocess.run([sys.executable, "-m", "fedmisp", "reload", "--home", str(nodes["a"].home)],
                             capture_output=True, text=True)
        assert cli.returncode == 2 and "peer 'c'.url" in cli.stderr
        import os
        import signal as sig
        os.kill(nodes["a"].proc.pid, sig.SIGHUP)
        wait_for(lambda: "reload refused" in nodes["a"].log.read_text(), what="the refusal in the log")
        assert urllib.request.urlopen(f"http://127.0.0.1:{nodes['a'].port}/node/v1/health").status == 200
        # the fixed file: reload picks up c, and c's next pull succeeds
        config.write_text(good)
        subprocess.run([sys.executable, "-m", "fedmisp", "reload", "--home", str(nodes["a"].home)], check=True,
                       capture_output=True)
        wait_for(lambda: ev["shared"] in nodes["c"].events(), what="c to receive after the reload")


@pytest.mark.slow
def test_a_star_spreads_each_level_from_a_leaf_exactly_as_far_as_allowed(tmp_path):
    names = ["hub", "l1", "l2", "l3"]
    nodes = configure(tmp_path, names, [("hub", leaf) for leaf in names[1:]])
    ev = _events(tmp_path, {"community": 1, "connected": 2, "all": 3})
    _import(nodes["l1"].home, tmp_path / "events")
    expected = {"l1": set(ev.values()), "hub": set(ev.values()),
                "l2": {ev["connected"], ev["all"]}, "l3": {ev["connected"], ev["all"]}}
    with running(nodes):
        wait_for(lambda: all(nodes[n].events() == expected[n] for n in names), what="the star to settle")
        time.sleep(3)
        assert {n: nodes[n].events() for n in names} == expected
