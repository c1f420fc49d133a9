"""The importer: worker processes give exactly what the in-process path gives."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from fedmisp.node.home import init_home
from fedmisp.node.importer import import_paths

from factories import event


def _files(folder: Path) -> list[Path]:
    folder.mkdir()
    paths = []
    for i in range(12):
        raw = event(seed=500 + i, attributes=40, objects=2)
        if i == 5:
            raw["Event"]["Attribute"][3]["value"] = "not an address"
            raw["Event"]["Attribute"][3]["type"] = "ip-dst"
            raw["Event"]["Attribute"][3]["category"] = "Network activity"
        path = folder / f"{i:02}.json"
        path.write_text(json.dumps(raw))
        paths.append(path)
    (folder / "99-broken.json").write_text("[")
    return paths


@pytest.mark.parametrize("strict", [False, True], ids=["dropping", "strict"])
def test_worker_processes_store_the_same_as_the_importing_process(tmp_path: Path, strict: bool):
    data = tmp_path / "data"
    _files(data)
    reports, exports = [], []
    for workers in (0, 2):
        node, _ = init_home(tmp_path / f"n{workers}", "Importer", "127.0.0.1:0")
        with node:
            reports.append(import_paths(node, [data], workers=workers, strict=strict))
            assert node.store.check_integrity() == []
            exports.append({u: node.store.export_event(u) for u in node.store.event_uuids()})
    inline, pooled = reports
    if strict:  # the event with the bad attribute is refused whole
        assert (pooled.events_stored, pooled.attributes_stored, pooled.dropped) == (11, 11 * 44, [])
    else:  # it is stored without the attribute
        assert (pooled.events_stored, pooled.attributes_stored) == (12, 12 * 44 - 1)
        assert len(pooled.dropped) == 1 and "05.json: event " in pooled.dropped[0]
        assert "field 'value'" in pooled.dropped[0]
    assert (inline.events_stored, inline.attributes_stored) == (pooled.events_stored, pooled.attributes_stored)
    assert inline.dropped == pooled.dropped
    assert sorted(inline.refused) == sorted(pooled.refused) and len(pooled.refused) == (2 if strict else 1)
    assert any("99-broken.json: invalid JSON" in r for r in pooled.refused)
    assert exports[0] == exports[1]


def test_reimport_through_workers_is_a_no_op(tmp_path: Path):
    data = tmp_path / "data"
    _files(data)
    node, _ = init_home(tmp_path / "n", "Importer", "127.0.0.1:0")
    with node:
        import_paths(node, [data], workers=2)
        before = node.store.stats()
        again = import_paths(node, [data], workers=2)
        assert again.events_stored == 0 and again.events_unchanged == 12
        assert node.store.stats() == before
