"""The store's insides stay inside it: only store/db.py holds LMDB handles, and nothing outside
fedmisp/store/ opens a transaction or names a database (issue 14, decision 0021).

A module that needs a fact from the store asks a `Store` method (or `Store.index_view` for the
correlation indexes); the store's own modules read and write through store/db.py's `Txn`."""
from __future__ import annotations

import ast
from pathlib import Path

import fedmisp

PACKAGE = Path(fedmisp.__file__).parent
STORE = PACKAGE / "store"
DB_MODULE = STORE / "db.py"
# Methods that open a transaction (LMDB's `begin`, Database's and Store's `read` / `write`)
OPENS_TRANSACTION = frozenset({"begin", "read", "write"})


def _modules() -> list[Path]:
    return sorted(p for p in PACKAGE.rglob("*.py") if "__pycache__" not in p.parts)


def _violations(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(), str(path))
    inside_store = STORE in path.parents
    found = []
    for node in ast.walk(tree):
        where = f"{path.relative_to(PACKAGE.parent)}:{getattr(node, 'lineno', '?')}"
        if path != DB_MODULE:
            if isinstance(node, ast.Attribute) and node.attr == "env":
                found.append(f"{where}: .env (the LMDB environment is store/db.py's)")
            if isinstance(node, ast.Subscript) and isinstance(node.value, ast.Attribute) and node.value.attr == "db":
                found.append(f"{where}: .db[...] (the LMDB databases are store/db.py's)")
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                names = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
                if any(n == "lmdb" or n.startswith("lmdb.") for n in names):
                    found.append(f"{where}: imports lmdb (only store/db.py does)")
        if not inside_store:
            if isinstance(node, ast.Attribute) and node.attr == "database":
                found.append(f"{where}: .database (the store's Database is for fedmisp/store/ only)")
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) \
                    and node.func.attr in OPENS_TRANSACTION \
                    and _names_store(node.func.value):
                found.append(f"{where}: opens a store transaction (.{node.func.attr}())")
            if isinstance(node, ast.ImportFrom) and node.module == "fedmisp.store.db":
                found.append(f"{where}: imports store/db.py (transactions are the store's own)")
    return found


def _names_store(node: ast.expr) -> bool:
    """Whether an expression reads as a store (`store`, `self.store`, `node.store`, `ctx.store`)."""
    if isinstance(node, ast.Name):
        return node.id == "store"
    return isinstance(node, ast.Attribute) and node.attr == "store"


def test_no_module_outside_the_store_reaches_into_it():
    problems = [p for path in _modules() for p in _violations(path)]
    assert not problems, "the store's insides used from outside:\n" + "\n".join(problems)


def test_the_check_finds_each_kind_of_reach(monkeypatch):
    # the walker itself, on a module outside the store that does each forbidden thing once
    bad = PACKAGE / "node" / "_layer_probe.py"
    source = (
        "import lmdb\n"
        "from fedmisp.store.db import Txn\n"
        "def f(store):\n"
        "    with store.env.begin() as txn:\n"
        "        txn.get(b'k', db=store.db['events'])\n"
        "    store.read()\n"
        "    store.database.write()\n"
    )
    monkeypatch.setattr(Path, "read_text", lambda self, *a, **k: source)
    found = _violations(bad)
    for expected in (".env", ".db[...]", "imports lmdb", "opens a store transaction (.read())",
                     ".database", "imports store/db.py"):
        assert any(expected in line for line in found), (expected, found)
