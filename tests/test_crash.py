"""Crash safety: SIGKILL an import at random points; the store holds only whole events, then a
re-import completes."""
from __future__ import annotations

import json
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from fedmisp.node.home import Node, init_home
from fedmisp.store.store import Store

from factories import event

EVENTS = 80
ATTRIBUTES = 300


@pytest.mark.slow
def test_sigkill_during_import_leaves_only_whole_events(tmp_path: Path):
    home = tmp_path / "node"
    node, _ = init_home(home, "Crash Test", "127.0.0.1:0")
    node.close()
    data = tmp_path / "events"
    data.mkdir()
    for i in range(EVENTS):
        (data / f"{i:03}.json").write_text(json.dumps(event(seed=1000 + i, attributes=ATTRIBUTES, objects=2)))

    # How long a whole import takes here, so the kills land at random points inside one.
    scratch, _ = init_home(tmp_path / "scratch", "Scratch", "127.0.0.1:0")
    scratch.close()
    started = time.monotonic()
    subprocess.run([sys.executable, "-m", "fedmisp", "import", "--home", str(scratch.config.home), str(data)],
                   check=True, capture_output=True, timeout=300)
    duration = time.monotonic() - started

    rng = random.Random(20261128)
    partial = 0
    watcher = Store(home / "store", readonly=True)  # another process's view, as a reader
    try:
        for attempt in range(5):
            proc = subprocess.Popen([sys.executable, "-m", "fedmisp", "import", "--home", str(home), str(data)],
                                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            time.sleep(rng.uniform(0.15, 0.95) * duration)
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=60)
            assert watcher.check_integrity() == [], f"after kill {attempt}"
            partial += watcher.stats()["events"] < EVENTS
    finally:
        watcher.close()
    assert partial >= 1, "every import finished before its kill: nothing was tested"

    done = subprocess.run([sys.executable, "-m", "fedmisp", "import", "--home", str(home), str(data)],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    with Node.open(home) as n:
        assert n.store.check_integrity() == []
        stats = n.store.stats()
        assert stats["events"] == EVENTS
        assert stats["attributes"] == EVENTS * (ATTRIBUTES + 4)
