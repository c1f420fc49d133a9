"""The API-key table has one owner (store/apikeys.py): the REST API asks it for a key's entry, the
node's home adds keys, `fedmisp apikey list / revoke` read and remove them through it."""
from __future__ import annotations

from fedmisp.node.cli import main
from fedmisp.node.home import Node, init_home
from fedmisp.store.apikeys import hash_api_key


def test_a_key_is_stored_by_its_hash_and_found_by_the_key_itself(store):
    store.api_keys.add("k" * 40, {"comment": "ci", "created": 1, "role": "user", "prefix": "kkkk"})
    assert store.api_keys.entry("k" * 40) == {"comment": "ci", "created": 1, "role": "user", "prefix": "kkkk"}
    assert store.api_keys.entry("x" * 40) is None
    assert [h for h, _ in store.api_keys.entries()] == [hash_api_key("k" * 40)]


def test_revoke_removes_only_the_one_key_its_id_names(store):
    for key in ("a" * 40, "b" * 40):
        store.api_keys.add(key, {"comment": "", "created": 1, "role": "user", "prefix": key[:4]})
    assert store.api_keys.revoke("") == 2  # ambiguous: nothing removed
    assert len(store.api_keys.entries()) == 2
    assert store.api_keys.revoke("not-hex") == 0
    assert store.api_keys.revoke(hash_api_key("a" * 40).hex()[:16]) == 1
    assert store.api_keys.entry("a" * 40) is None and store.api_keys.entry("b" * 40) is not None


def test_the_cli_lists_and_revokes_keys(tmp_path, capsys):
    node, admin = init_home(tmp_path / "home", "Test CSIRT", "127.0.0.1:0")
    node.close()
    home = str(tmp_path / "home")
    assert main(["apikey", "create", "--home", home, "--role", "read-only", "--comment", "feeds"]) == 0
    reader = capsys.readouterr().out.strip()
    assert main(["apikey", "list", "--home", home]) == 0
    listed = capsys.readouterr().out.splitlines()
    assert len(listed) == 2
    line = next(x for x in listed if "feeds" in x)
    assert line.startswith(hash_api_key(reader).hex()[:16]) and f"{reader[:4]}…" in line and "read-only" in line
    assert main(["apikey", "revoke", "--home", home, ""]) == 2
    assert "2 keys match" in capsys.readouterr().err
    assert main(["apikey", "revoke", "--home", home, line.split()[0]]) == 0
    assert capsys.readouterr().out.strip() == "revoked"
    with Node.open(tmp_path / "home") as reopened:
        assert reopened.store.api_keys.entry(reader) is None
        assert reopened.store.api_keys.entry(admin)["role"] == "admin"
