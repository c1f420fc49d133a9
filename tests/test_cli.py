"""The fedmisp command as a new user runs it: init, info, import, export, status."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path


from factories import event

ROOT = Path(__file__).resolve().parent.parent
SAMPLES = ROOT / "configs" / "samples"


def fedmisp(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    result = subprocess.run([sys.executable, "-m", "fedmisp", *args], capture_output=True, text=True, timeout=120)
    if check and result.returncode != 0:
        raise AssertionError(f"fedmisp {' '.join(args)} failed ({result.returncode}): {result.stderr}")
    return result


def test_init_info_import_status_export(tmp_path: Path):
    home = tmp_path / "n"
    out = fedmisp("init", "--home", str(home), "--org", "Police Cybercrime Unit", "--listen", "127.0.0.1:9123")
    assert "admin API key" in out.stdout
    assert os.stat(home / "identity.key").st_mode & 0o777 == 0o600
    info = json.loads(fedmisp("info", "--home", str(home), "--json").stdout)
    assert info["org_name"] == "Police Cybercrime Unit" and info["listen"] == "127.0.0.1:9123"
    assert len(info["public_key"]) == 43
    imported = fedmisp("import", "--home", str(home), str(SAMPLES))
    assert "3 event(s) stored" in imported.stdout
    again = fedmisp("import", "--home", str(home), str(SAMPLES))
    assert "0 event(s) stored" in again.stdout and "3 unchanged" in again.stdout
    status = json.loads(fedmisp("status", "--home", str(home), "--json").stdout)
    assert status["events"] == 3 and status["attributes"] == 17
    dump = json.loads(fedmisp("export", "--home", str(home)).stdout)
    assert {e["Event"]["uuid"] for e in dump["response"]} == {p.stem for p in SAMPLES.glob("*.json")}
    feed = tmp_path / "feed"
    fedmisp("export", "--home", str(home), "--format", "feed", "--out", str(feed))
    manifest = json.loads((feed / "manifest.json").read_text())
    assert set(manifest) == {p.stem for p in SAMPLES.glob("*.json")}
    assert (feed / "hashes.csv").read_text().count("\n") == 17 + 1  # ip-dst|port counts both halves
    # local tags stay on the node: present in misp-json, absent from the feed
    local = [t for e in dump["response"] for t in e["Event"].get("Tag", []) if t.get("local")]
    assert local and all(not t.get("local") for e in manifest.values() for t in e["Tag"])
    # a feed folder is importable into another node
    other = tmp_path / "o"
    fedmisp("init", "--home", str(other), "--org", "Bank SOC")
    assert "3 event(s) stored" in fedmisp("import", "--home", str(other), str(feed)).stdout


def test_init_refuses_an_existing_node_and_bad_listen(tmp_path: Path):
    home = tmp_path / "n"
    fedmisp("init", "--home", str(home), "--org", "A")
    again = fedmisp("init", "--home", str(home), "--org", "A", check=False)
    assert again.returncode == 2 and "already lives here" in again.stderr
    bad = fedmisp("init", "--home", str(tmp_path / "m"), "--org", "A", "--listen", "nowhere", check=False)
    assert bad.returncode == 2 and "HOST:PORT" in bad.stderr


def test_import_reports_each_refusal_and_goes_on(tmp_path: Path):
    home = tmp_path / "n"
    fedmisp("init", "--home", str(home), "--org", "A")
    files = tmp_path / "in"
    files.mkdir()
    (files / "a_broken.json").write_text('{"Event": {"info": "x",')
    bad = event(seed=1, attributes=3)
    bad["Event"]["Attribute"][2]["type"] = "md5"
    bad["Event"]["Attribute"][2]["category"] = "Payload delivery"
    bad["Event"]["Attribute"][2]["value"] = "not-a-hash"
    (files / "b_bad_value.json").write_text(json.dumps(bad))
    (files / "c_good.json").write_text(json.dumps(event(seed=2, attributes=3)))
    result = fedmisp("import", "--strict", "--home", str(home), str(files))
    assert result.returncode == 0
    assert "a_broken.json: invalid JSON at line 1" in result.stderr
    bad_uuid = bad["Event"]["uuid"]
    attr_uuid = bad["Event"]["Attribute"][2]["uuid"]
    assert f"b_bad_value.json: event {bad_uuid}" in result.stderr
    assert f"Attribute[2] (uuid {attr_uuid})" in result.stderr and "field 'value'" in result.stderr
    assert "1 event(s) stored" in result.stdout and "2 refused" in result.stdout
    assert json.loads(fedmisp("status", "--home", str(home), "--json").stdout)["events"] == 1
    # without --strict the bad attribute is dropped and its event stored (tests/test_import_lenient.py)
    result = fedmisp("import", "--home", str(home), str(files))
    assert f"dropped: {files / 'b_bad_value.json'}: event {bad_uuid}: attribute Attribute[2] (uuid {attr_uuid})" \
        in result.stderr
    assert "1 event(s) stored" in result.stdout and "1 refused, 1 element(s) dropped" in result.stdout


def test_commands_on_a_missing_home_say_how_to_create_one(tmp_path: Path):
    result = fedmisp("status", "--home", str(tmp_path / "none"), check=False)
    assert result.returncode == 2 and "fedmisp init --home" in result.stderr


def test_config_check_reports_every_problem_with_its_field(tmp_path: Path):
    home = tmp_path / "n"
    fedmisp("init", "--home", str(home), "--org", "A")
    ok = fedmisp("config", "check", "--home", str(home))
    assert ok.returncode == 0 and "ok (0 peer(s))" in ok.stdout
    config = home / "fedmisp.toml"
    config.write_text(config.read_text().replace('listen = "127.0.0.1:8480"', 'listen = "nowhere"')
                      + '\n[[peer]]\nname = "b"\nurl = "ftp://b"\nkey = "x"\n')
    os.chmod(home / "identity.key", 0o644)
    bad = fedmisp("config", "check", "--home", str(home), check=False)
    assert bad.returncode == 1
    for needle in ("node.listen: 'nowhere'", "peer 'b'.url: 'ftp://b'", "peer 'b'.key:", "chmod 600", "4 problem(s)"):
        assert needle in bad.stderr, (needle, bad.stderr)


def test_misp_json_and_feed_exports_carry_galaxy_blocks_from_cluster_tags_and_read_back_as_the_same_tags(tmp_path: Path):
    """MISP's JSON and its feeds carry `Galaxy` blocks where an event or attribute has a cluster
    tag (decision 0027: derived, never stored); importing the export again gives the same tags."""
    home = tmp_path / "n"
    fedmisp("init", "--home", str(home), "--org", "Galaxy Org", "--listen", "127.0.0.1:0")
    raw = event(seed=5, attributes=2, objects=0)
    cluster = 'misp-galaxy:threat-actor="APT29"'
    raw["Event"].setdefault("Tag", []).append({"name": cluster})
    raw["Event"]["Attribute"][0].setdefault("Tag", []).append({"name": cluster})
    path = tmp_path / "e.json"
    path.write_text(json.dumps(raw))
    fedmisp("import", "--home", str(home), str(path))
    [shown] = json.loads(fedmisp("export", "--home", str(home)).stdout)["response"]
    e = shown["Event"]
    [block] = e["Galaxy"]
    assert block["type"] == "threat-actor" and [c["value"] for c in block["GalaxyCluster"]] == ["APT29"]
    assert [c["value"] for b in e["Attribute"][0]["Galaxy"] for c in b["GalaxyCluster"]] == ["APT29"]
    assert "Galaxy" not in e["Attribute"][1]
    feed = tmp_path / "feed"
    fedmisp("export", "--home", str(home), "--format", "feed", "--out", str(feed))
    fed = json.loads((feed / f"{e['uuid']}.json").read_text())["Event"]
    assert [c["value"] for b in fed["Galaxy"] for c in b["GalaxyCluster"]] == ["APT29"]
    out = tmp_path / "out"
    fedmisp("export", "--home", str(home), "--format", "misp-json", "--out", str(out))
    again = tmp_path / "again"
    fedmisp("init", "--home", str(again), "--org", "Other", "--listen", "127.0.0.1:0")
    fedmisp("import", "--home", str(again), str(out))
    [back] = json.loads(fedmisp("export", "--home", str(again)).stdout)["response"]
    assert [t["name"] for t in back["Event"]["Tag"]].count(cluster) == 1
    assert [t["name"] for t in back["Event"]["Attribute"][0]["Tag"]].count(cluster) == 1


def test_a_misp_peer_gets_a_sync_key_that_removing_the_peer_revokes(tmp_path: Path):
    home = tmp_path / "node"
    fedmisp("init", "--home", str(home), "--org", "Node CSIRT", "--listen", "127.0.0.1:8499")
    org = "3c21e55a-edac-4321-960b-cda533f50a78"
    added = fedmisp("peer", "add", "--home", str(home), "--name", "community", "--kind", "misp",
                    "--url", "https://misp.example.org", "--org-uuid", org).stdout
    key = next(line for line in added.splitlines() if len(line) == 40 and line.isalnum())
    assert "http://127.0.0.1:8499" in added and key in added
    assert 'kind = "misp"' in (home / "fedmisp.toml").read_text()
    assert "sync" in fedmisp("apikey", "list", "--home", str(home)).stdout
    wrong = fedmisp("peer", "add", "--home", str(home), "--name", "other", "--kind", "misp", "--url",
                    "https://misp2.example.org", "--org-uuid", org, "--mode", "internal", check=False)
    assert wrong.returncode == 2 and "not for a MISP peer" in wrong.stderr
    removed = fedmisp("peer", "remove", "--home", str(home), "community").stdout
    assert "revoked its sync key (1)" in removed
    assert "sync" not in fedmisp("apikey", "list", "--home", str(home)).stdout
    assert "community" not in (home / "fedmisp.toml").read_text()
