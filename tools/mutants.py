"""Mutation testing of the security rules: does some test fail when a rule is broken?

Each mutant changes one place of a security-relevant module (a comparison flipped, a condition
negated or dropped, `and`/`or` swapped, a constant changed, a statement, return or raise dropped, a
refusal turned into `Reason.ALLOWED`, `min`/`max` swapped, an element taken out of a rule's
table, a route's role lowered or made public), then runs the tests mapped to that module
(`TARGETS`) against it. A mutant no test notices is a survivor: a rule that can break unseen, or
an equivalent change (tools/mutants-harmless.txt says which, and why).

    make mutants                                   # every target (hours: see --sample)
    .venv/bin/python tools/mutants.py --list       # the mutants, without running anything
    .venv/bin/python tools/mutants.py --module policy/filters --module policy/orgs
    .venv/bin/python tools/mutants.py --sample 60 --seed 1 --json /tmp/mutants.json
    .venv/bin/python tools/mutants.py --sample 5 --sample-for policy/=8 --seed 21   # the report's sample
    .venv/bin/python tools/mutants.py --at fedmisp/policy/filters.py:42            # the mutants of one line
    .venv/bin/python tools/mutants.py --at fedmisp/policy/filters.py#17            # one, by its --list index
    .venv/bin/python tools/mutants.py --survivors /tmp/mutants.json                # rerun a run's survivors

The sample is drawn per module from a random generator seeded by (seed, module), so one module's
sample does not depend on which other modules are selected: `--module X --seed S` reruns exactly
the mutants of X that the full run with seed S drew.

The worktree is copied once to a temporary folder and mutated there (PYTHONPATH puts the copy
first, node processes the tests start inherit it), so the checkout is never touched. One mutant
at a time, on one core; run it niced (`make mutants` does). Not part of `make test`.
"""
from __future__ import annotations

import argparse
import ast
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Iterator

ROOT = Path(__file__).resolve().parent.parent
HARMLESS = Path(__file__).with_name("mutants-harmless.txt")

# Tests that pin the rules of each module, fastest killers first (pytest -x stops at the first
# failure). Slow-marked tests are left out: they start many node processes per test.
_POLICY = ["tests/test_policy_rules.py", "tests/test_security_rules.py", "tests/test_edge_rules.py",
           "tests/test_cluster_rules.py", "tests/test_policy_property.py", "tests/test_gossip_replication.py",
           "tests/test_analyst_data.py"]
_API_ROLES = ["tests/test_api_roles.py"]


@dataclass(frozen=True)
class Target:
    tests: tuple[str, ...]
    functions: frozenset[str] | None = None  # only these (qualified) functions; None: the whole module
    constants: frozenset[str] = frozenset()  # module-level tables whose entries are rules
    decorators: bool = False  # the routes' declared roles (`@routes.post(path, ROLE)`)


TARGETS: dict[str, Target] = {
    "fedmisp/policy/filters.py": Target(tuple(_POLICY)),
    "fedmisp/policy/pipeline.py": Target(tuple(_POLICY), constants=frozenset({"SERVES", "TAKES"})),
    "fedmisp/policy/outbound.py": Target(tuple(_POLICY)),
    "fedmisp/policy/inbound.py": Target(tuple(_POLICY)),
    "fedmisp/policy/sharing_groups.py": Target(("tests/test_policy_rules.py", "tests/test_security_rules.py",
                                                "tests/test_policy_property.py", "tests/test_api_orgs.py",
                                                "tests/test_api_federation.py")),
    "fedmisp/policy/orgs.py": Target(("tests/test_security_rules.py", "tests/test_keys.py",
                                      "tests/test_org_vouching.py", "tests/test_blocked_keys.py")),
    "fedmisp/policy/holding.py": Target(("tests/test_holding_codec.py",) + tuple(_POLICY) + ("tests/test_store_format.py",)),
    "fedmisp/policy/model.py": Target(tuple(_POLICY) + ("tests/test_store_format.py",),
                                      constants=frozenset({"TLP_ORDER", "PAP_ORDER"})),
    "fedmisp/policy/config.py": Target(("tests/test_policy_config.py", "tests/test_security_rules.py",
                                        "tests/test_config_example.py"), constants=frozenset({"_LIST_FIELDS"})),
    "fedmisp/gossip/auth.py": Target(("tests/test_gossip_auth.py", "tests/test_security_rules.py",
                                      "tests/test_blocked_keys.py", "tests/test_keys.py"),
                                     constants=frozenset({"MAX_CLOCK_SKEW", "NONCE_BYTES", "MAX_NONCES_PER_KEY"})),
    "fedmisp/policy/templates.py": Target(("tests/test_template_rules.py", "tests/test_object_templates.py")),
    "fedmisp/policy/clusters.py": Target(("tests/test_cluster_rules.py", "tests/test_galaxy_clusters.py")),
    "fedmisp/policy/retractions.py": Target(("tests/test_retraction_rules.py", "tests/test_edge_rules.py", "tests/test_relay_trust.py",
                                             "tests/test_policy_property.py", "tests/test_replication_property.py")),
    # the peer protocol's server and client: body limits, request domains, reply caps, replays
    "fedmisp/gossip/http.py": Target(("tests/test_peer_http.py", "tests/test_server_limits.py",
                                      "tests/test_gossip_auth.py", "tests/test_hostile_peer.py")),
    "fedmisp/gossip/session.py": Target(("tests/test_gossip_session.py", "tests/test_pull_domains.py",
                                         "tests/test_security_rules.py", "tests/test_edge_rules.py",
                                         "tests/test_retraction_rules.py",
                                         "tests/test_gossip_replication.py", "tests/test_author_rule.py",
                                         "tests/test_blocked_keys.py", "tests/test_gossip_extras.py",
                                         "tests/test_relay_trust.py"),
                                        constants=frozenset({"MAX_MESSAGE_BYTES", "BODIES_PAGE"})),
    "fedmisp/model/received.py": Target(("tests/test_gossip_replication.py", "tests/test_security_rules.py",
                                     "tests/test_gossip_session.py"),
                                    functions=frozenset({"received_problem"}),
                                    constants=frozenset({"_RECEIVED_RULES", "_RECEIVED_HEADER",
                                                         "_RECEIVED_ATTRIBUTE", "_RECEIVED_REFERENCE",
                                                         "_RECEIVED_OBJECT"})),
    "fedmisp/node/api/access.py": Target(tuple(_API_ROLES) + ("tests/test_api.py", "tests/test_operator.py"),
                                         functions=frozenset({"declare", "declared", "undeclared_routes",
                                                              "refuse_undeclared", "access_middleware",
                                                              "_check_operator", "request_role", "role_of"})),
    "fedmisp/node/api/helpers.py": Target(tuple(_API_ROLES) + ("tests/test_api.py", "tests/test_api_proposals.py"),
                                          functions=frozenset({"may", "must_be_creator"}),
                                          constants=frozenset({"ROLE_LEVEL"}), decorators=True),
    # each module's routes: their roles, and the module's own API tests
    **{f"fedmisp/node/api/{name}.py": Target(tuple(_API_ROLES) + (f"tests/test_api_{name}.py",),
                                             functions=frozenset(), decorators=True)
       for name in ("objects", "orgs", "proposals", "sightings", "tags")},
    **{f"fedmisp/node/api/{name}.py": Target(tuple(_API_ROLES) + ("tests/test_api.py",), functions=frozenset(),
                                             decorators=True)
       for name in ("instance", "events", "attributes", "search")},
}

ROLES = ("read-only", "user", "publisher", "admin")  # node/home.py's ROLES, lowest first
_ROLE_NAMES = dict(zip(("READ_ONLY", "USER", "PUBLISHER", "ADMIN"), ROLES))  # node/api/access.py's names


def _role(node: ast.expr) -> str | None:
    """The role a route's access argument names: a string, or one of access.py's role constants."""
    if isinstance(node, ast.Constant):
        return node.value if isinstance(node.value, str) else None
    return _ROLE_NAMES.get(node.id) if isinstance(node, ast.Name) else None
_LOGGING = frozenset({"log", "logger", "logging", "warnings"})
# calls whose argument at this position is a reason code: AuthError("stale", ...), Refused(seq, "malformed", ...)
_REASON_ARGUMENT = {"AuthError": 0, "Refused": 1}
_SWAPPED_CALLS = {"min": "max", "max": "min", "any": "all", "all": "any"}
_FLIPS: dict[type, tuple[type, ...]] = {
    ast.Eq: (ast.NotEq,), ast.NotEq: (ast.Eq,), ast.Is: (ast.IsNot,), ast.IsNot: (ast.Is,),
    ast.In: (ast.NotIn,), ast.NotIn: (ast.In,),
    ast.Lt: (ast.LtE, ast.GtE), ast.LtE: (ast.Lt, ast.Gt), ast.Gt: (ast.GtE, ast.LtE), ast.GtE: (ast.Gt, ast.Lt),
}


@dataclass(frozen=True)
class Mutant:
    path: str  # relative to the repository
    line: int
    function: str  # where it is: a function's qualified name, or a module-level table's name
    operator: str
    original: str
    replacement: str
    start: int  # byte offsets of the replaced source
    end: int

    @property
    def description(self) -> str:
        return f"{self.operator}: {_short(self.original)} -> {_short(self.replacement)}"

    @property
    def key(self) -> str:
        """Stable across edits elsewhere in the file (no line number): how harmless ones are listed."""
        return f"{self.path} :: {self.function} :: {self.description}"


def _short(text: str, limit: int = 90) -> str:
    one = " ".join(text.split())
    return one if len(one) <= limit else one[: limit - 3] + "..."


# --- finding mutants -------------------------------------------------------------------------------

class _Finder(ast.NodeVisitor):
    def __init__(self, path: str, source: bytes, target: Target):
        self.path, self.source, self.target = path, source, target
        self.lines = source.split(b"\n")
        self.offsets = [0]
        for line in self.lines:
            self.offsets.append(self.offsets[-1] + len(line) + 1)
        self.scope: list[str] = []
        self.where: str | None = None  # set while inside what may be mutated
        self.bound: list[set[str]] = []  # names bound so far in each enclosing function
        self.ends: set[ast.stmt] = set()  # the last statement of each function
        self.found: list[Mutant] = []
        self._in_fstring = 0
        self._in_compare = 0
        self._strings = 0  # inside what makes a string a rule: compared, returned, a pattern, a reason code

    # positions and text
    def _span(self, node: ast.AST) -> tuple[int, int]:
        return (self.offsets[node.lineno - 1] + node.col_offset,  # type: ignore[attr-defined]
                self.offsets[node.end_lineno - 1] + node.end_col_offset)  # type: ignore[attr-defined]

    def _text(self, node: ast.AST) -> str:
        start, end = self._span(node)
        return self.source[start:end].decode()

    def _add(self, node: ast.AST, operator: str, replacement: str, *, span_of: ast.AST | None = None) -> None:
        if self.where is None or self._in_fstring:
            return
        start, end = self._span(span_of or node)
        original = self.source[start:end].decode()
        if replacement == original:
            return
        self.found.append(Mutant(self.path, node.lineno, self.where, operator, original, replacement, start, end))  # type: ignore[attr-defined]

    def _expr(self, node: ast.expr, operator: str, new: ast.expr) -> None:
        self._add(node, operator, f"({ast.unparse(new)})")

    # scopes
    def _function(self, node: ast.FunctionDef | ast.AsyncFunctionDef) -> None:
        self.scope.append(node.name)
        qualified = ".".join(self.scope)
        outer = self.where
        allowed = self.target.functions is None or node.name in self.target.functions \
            or qualified in self.target.functions or outer is not None
        if self.target.decorators:
            self._decorators(node)
        self.where = qualified if allowed else None
        args = node.args
        self.bound.append({a.arg for a in args.posonlyargs + args.args + args.kwonlyargs}
                          | ({args.vararg.arg} if args.vararg else set()) | ({args.kwarg.arg} if args.kwarg else set()))
        self.ends.add(node.body[-1])
        for statement in node.body:
            self.visit(statement)
        self.bound.pop()
        self.where = outer
        self.scope.pop()

    visit_FunctionDef = visit_AsyncFunctionDef = _function  # type: ignore[assignment]

    def visit_ClassDef(self, node: ast.ClassDef) -> None:
        self.scope.append(node.name)
        for statement in node.body:
            self.visit(statement)
        self.scope.pop()

    def _decorators(self, node: ast.FunctionDef | ast.AsyncFunctionDef) -> None:
        """A route's declared access (node/api/access.py: `@routes.post("/events/add", USER)`)."""
        for decorator in node.decorator_list:
            if isinstance(decorator, ast.Call) and isinstance(decorator.func, ast.Attribute) \
                    and decorator.func.attr in ("get", "post", "delete", "route") and len(decorator.args) >= 2 \
                    and _role(decorator.args[-1]) in ROLES:
                where, self.where = self.where, f"route access of {'.'.join(self.scope)}"
                role = _role(decorator.args[-1])
                if role != ROLES[0]:
                    lower = ROLES[ROLES.index(role) - 1]
                    self._add(decorator.args[-1], "role lowered", repr(lower).replace("'", '"'))
                # a route open to anyone (a route cannot declare nothing: it would not be declared)
                self._add(decorator.args[-1], "made public", '"public"')
                self.where = where

    def visit_Assign(self, node: ast.Assign | ast.AnnAssign) -> None:
        targets = node.targets if isinstance(node, ast.Assign) else [node.target]
        names = [t.id for t in targets if isinstance(t, ast.Name)]
        if not self.scope and any(n in self.target.constants for n in names):
            self.where = names[0]
            self._table(node.value)
            self.generic_visit(node)
            self.where = None
            return
        if node.value is not None:
            self._statement(node)
        self.generic_visit(node)
        if self.bound:
            self.bound[-1].update(n.id for t in targets for n in ast.walk(t) if isinstance(n, ast.Name))

    visit_AnnAssign = visit_Assign  # type: ignore[assignment]

    def _table(self, value: ast.expr) -> None:
        """Each entry of a rule table left out, one at a time."""
        if isinstance(value, ast.Call) and value.args and isinstance(value.func, ast.Name) \
                and value.func.id in ("frozenset", "set", "tuple", "re.compile"):
            value = value.args[0]
        if isinstance(value, (ast.Tuple, ast.List, ast.Set)) and len(value.elts) > 1:
            for i, element in enumerate(value.elts):
                rest = value.elts[:i] + value.elts[i + 1:]
                self._expr(value, "entry dropped", type(value)(elts=rest, ctx=ast.Load()) if not isinstance(value, ast.Set)
                           else ast.Set(elts=rest))
        elif isinstance(value, ast.Dict) and len(value.keys) > 1:
            for i in range(len(value.keys)):
                self._expr(value, "entry dropped",
                           ast.Dict(keys=value.keys[:i] + value.keys[i + 1:], values=value.values[:i] + value.values[i + 1:]))

    # statements
    def _statement(self, node: ast.stmt) -> None:
        if self.where is None:
            return
        if isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            # dropping the first binding of a name only raises NameError; a re-binding is a real mutant
            if all(isinstance(t, ast.Name) for t in targets) and (
                    not self.bound or not all(t.id in self.bound[-1] for t in targets)):  # type: ignore[attr-defined]
                return
        self._add(node, "statement dropped", "pass")

    def visit_Return(self, node: ast.Return) -> None:
        if not self._last_return_of_none(node):
            self._statement(node)
        self._strings += 1
        self.generic_visit(node)
        self._strings -= 1

    def _last_return_of_none(self, node: ast.Return) -> bool:
        """`return None` ending a function: dropping it changes nothing."""
        return (node.value is None or isinstance(node.value, ast.Constant) and node.value.value is None) \
            and node in self.ends

    def visit_Raise(self, node: ast.Raise) -> None:
        self._statement(node)
        self.generic_visit(node)

    def visit_Continue(self, node: ast.Continue) -> None:
        self._statement(node)

    visit_Break = visit_Continue  # type: ignore[assignment]

    def visit_AugAssign(self, node: ast.AugAssign) -> None:
        self._statement(node)
        self.generic_visit(node)

    def visit_Expr(self, node: ast.Expr) -> None:
        value = node.value
        if isinstance(value, ast.Constant):
            return  # a docstring
        if isinstance(value, ast.Call) and isinstance(value.func, ast.Attribute) \
                and isinstance(value.func.value, ast.Name) and value.func.value.id in _LOGGING:
            return  # logging
        self._statement(node)
        self.generic_visit(node)

    def visit_If(self, node: ast.If) -> None:
        self._negate(node.test)
        self.generic_visit(node)

    def visit_While(self, node: ast.While) -> None:
        self._negate(node.test)
        self.generic_visit(node)

    def visit_IfExp(self, node: ast.IfExp) -> None:
        self._negate(node.test)
        self.generic_visit(node)

    def visit_Assert(self, node: ast.Assert) -> None:
        self._statement(node)
        self.generic_visit(node)

    def _negate(self, test: ast.expr) -> None:
        if isinstance(test, ast.Compare) or (isinstance(test, ast.UnaryOp) and isinstance(test.op, ast.Not)):
            return  # flipped or un-negated where it is visited
        self._expr(test, "condition negated", ast.UnaryOp(op=ast.Not(), operand=test))

    # expressions
    def visit_JoinedStr(self, node: ast.JoinedStr) -> None:
        self._in_fstring += 1
        self.generic_visit(node)
        self._in_fstring -= 1

    def visit_Compare(self, node: ast.Compare) -> None:
        for i, op in enumerate(node.ops):
            for flipped in _FLIPS.get(type(op), ()):
                ops = list(node.ops)
                ops[i] = flipped()
                self._expr(node, "comparison", ast.Compare(left=node.left, ops=ops, comparators=node.comparators))
        for comparator in node.comparators:
            if isinstance(comparator, (ast.Tuple, ast.List, ast.Set)) and len(comparator.elts) > 1:
                self._table(comparator)
        self._in_compare += 1
        self.generic_visit(node)
        self._in_compare -= 1

    def visit_BoolOp(self, node: ast.BoolOp) -> None:
        other = ast.Or() if isinstance(node.op, ast.And) else ast.And()
        self._expr(node, "and/or", ast.BoolOp(op=other, values=node.values))
        for i in range(len(node.values)):
            rest = node.values[:i] + node.values[i + 1:]
            self._expr(node, "condition dropped", rest[0] if len(rest) == 1 else ast.BoolOp(op=node.op, values=rest))
        self.generic_visit(node)

    def visit_UnaryOp(self, node: ast.UnaryOp) -> None:
        if isinstance(node.op, ast.Not):
            self._expr(node, "not dropped", node.operand)
        self.generic_visit(node)

    def visit_BinOp(self, node: ast.BinOp) -> None:
        strings = any(isinstance(x, (ast.JoinedStr, ast.Constant)) and isinstance(getattr(x, "value", None), (str, bytes))
                      for x in (node.left, node.right))
        if not strings and isinstance(node.op, (ast.Add, ast.Sub)):
            other = ast.Sub() if isinstance(node.op, ast.Add) else ast.Add()
            self._expr(node, "arithmetic", ast.BinOp(left=node.left, op=other, right=node.right))
        self._strings += 1  # a string built up: a pattern, a key
        self.generic_visit(node)
        self._strings -= 1

    def visit_Call(self, node: ast.Call) -> None:
        func = node.func
        if isinstance(func, ast.Name) and func.id in _SWAPPED_CALLS:
            self._add(func, "call swapped", _SWAPPED_CALLS[func.id])
        if isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name) and func.value.id in _LOGGING:
            return
        if self.target.decorators and isinstance(func, ast.Name) and func.id == "may" and len(node.args) == 2 \
                and isinstance(node.args[1], ast.Constant) and node.args[1].value in ROLES[1:]:
            lower = ROLES[ROLES.index(node.args[1].value) - 1]
            self._add(node.args[1], "role lowered", f'"{lower}"')
        name = func.id if isinstance(func, ast.Name) else func.attr if isinstance(func, ast.Attribute) else ""
        coded = _REASON_ARGUMENT.get(name)
        if coded is not None and len(node.args) > coded:
            self.visit(node.func)
            for i, argument in enumerate(node.args):
                self._strings += i == coded  # the reason code a refusal is counted and reported by
                self.visit(argument)
                self._strings -= i == coded
            for keyword in node.keywords:
                self.visit(keyword.value)
            return
        if isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name) and func.value.id == "re":
            self._strings += 1  # a regular expression
            self.generic_visit(node)
            self._strings -= 1
            return
        self.generic_visit(node)

    def visit_Attribute(self, node: ast.Attribute) -> None:
        if isinstance(node.value, ast.Name) and node.value.id == "Reason" and not self._in_compare:
            if node.attr != "ALLOWED":
                self._add(node, "refusal allowed", "Reason.ALLOWED")
            else:
                self._add(node, "allowed refused", "Reason.MALFORMED")
        self.generic_visit(node)

    def visit_Constant(self, node: ast.Constant) -> None:
        value = node.value
        if isinstance(value, bool):
            self._add(node, "constant", repr(not value))
        elif isinstance(value, int):
            self._add(node, "constant", repr(value + 1))
            self._add(node, "constant", repr(value - 1))
        elif isinstance(value, str) and (self._in_compare or self._strings):
            self._add(node, "constant", repr("" if value else "~"))


def find_mutants(path: str, target: Target) -> list[Mutant]:
    source = (ROOT / path).read_bytes()
    finder = _Finder(path, source, target)
    tree = ast.parse(source)
    for statement in tree.body:
        finder.visit(statement)
    unique: dict[tuple[int, int, str], Mutant] = {}
    for m in finder.found:
        unique.setdefault((m.start, m.end, m.replacement), m)
    return sorted(unique.values(), key=lambda m: (m.start, m.end, m.replacement))


def apply(source: bytes, mutant: Mutant) -> bytes:
    return source[: mutant.start] + mutant.replacement.encode() + source[mutant.end:]


# --- running ---------------------------------------------------------------------------------------

@dataclass
class Result:
    mutant: Mutant
    outcome: str  # killed, survived, timeout
    seconds: float
    failed: str = ""  # the first failing test (from pytest's summary)


@dataclass
class Report:
    module: str
    results: list[Result] = field(default_factory=list)

    @property
    def killed(self) -> int:
        return sum(r.outcome != "survived" for r in self.results)

    def survivors(self) -> list[Result]:
        return [r for r in self.results if r.outcome == "survived"]


def _copy_tree(dest: Path) -> Path:
    skip = {".git", ".venv", ".hypothesis", ".pytest_cache", "__pycache__", ".data", "demo", "fedmisp.egg-info"}
    shutil.copytree(ROOT, dest, ignore=lambda _d, names: [n for n in names if n in skip])
    return dest


def _pytest(copy: Path, tests: tuple[str, ...], timeout: float) -> tuple[str, float, str]:
    env = dict(os.environ, PYTHONPATH=str(copy), HYPOTHESIS_STORAGE_DIRECTORY=str(copy / ".hypothesis"))
    command = [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", "-o", "addopts=",
               "--hypothesis-seed=0", "-m", "not slow", *[t for t in tests if (copy / t).exists()]]
    started = time.monotonic()
    proc = subprocess.Popen(command, cwd=copy, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, start_new_session=True)
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)  # the test run and the node processes it started
        proc.communicate()
        return "timeout", time.monotonic() - started, ""
    finally:
        # node processes a killed test could not stop are in its process group
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    seconds = time.monotonic() - started
    if proc.returncode == 5:
        raise SystemExit(f"no tests collected: {' '.join(tests)}\n{out[-2000:]}")
    if proc.returncode == 0:
        return "survived", seconds, ""
    failed = [line.split(" ", 2)[1] for line in out.splitlines() if line.startswith(("FAILED ", "ERROR ")) and " " in line]
    last = out.strip().splitlines()[-1] if out.strip() else f"exit {proc.returncode}"
    return "killed", seconds, failed[0] if failed else last


def _harmless() -> dict[str, str]:
    """Survivors judged harmless: `path :: function :: description :: why`, one a line."""
    out: dict[str, str] = {}
    if HARMLESS.exists():
        for line in HARMLESS.read_text().splitlines():
            if line.strip() and not line.startswith("#"):
                *key, why = [part.strip() for part in line.split(" :: ")]
                out[" :: ".join(key)] = why
    return out


def _sample_size(module: str, sample: int | None, per_module: dict[str, int]) -> int | None:
    for pattern, size in per_module.items():
        if pattern in module:
            return size
    return sample


def _select(module: str, mutants: list[Mutant], at: list[str]) -> list[Mutant]:
    """`path:line` (every mutant of that line) or `path#index` (the --list index, from 0)."""
    chosen: list[Mutant] = []
    for spec in at:
        if "#" in spec:
            where, index = spec.rsplit("#", 1)
            if where in module and int(index) < len(mutants):
                chosen.append(mutants[int(index)])
        else:
            where, _, line = spec.rpartition(":")
            if where in module:
                chosen.extend(m for m in mutants if m.line == int(line))
    return sorted(set(chosen), key=lambda m: (m.start, m.end, m.replacement))


def _survivor_keys(paths: list[Path]) -> set[tuple[str, int, int, str]]:
    """The survivors of earlier runs (their --json), by position: rerun after tests were added."""
    keys: set[tuple[str, int, int, str]] = set()
    for path in paths:
        for report in json.loads(path.read_text()):
            keys.update((x["path"], x["start"], x["end"], x["replacement"])
                        for x in report["results"] if x["outcome"] == "survived")
    return keys


def run(modules: list[str], sample: int | None, seed: int, timeout_factor: float, json_out: Path | None,
        listing: bool, *, per_module: dict[str, int] | None = None, at: list[str] | None = None,
        survivors: list[Path] | None = None, timeout: float | None = None) -> int:
    plan: dict[str, list[Mutant]] = {}
    again = _survivor_keys(survivors) if survivors else None
    for module in modules:
        every = find_mutants(module, TARGETS[module])
        if at:
            mutants = _select(module, every, at)
        elif again is not None:
            mutants = [m for m in every if (m.path, m.start, m.end, m.replacement) in again]
        else:
            mutants = every
            size = _sample_size(module, sample, per_module or {})
            if size is not None and len(mutants) > size:
                rng = random.Random(f"{seed}:{module}")
                mutants = sorted(rng.sample(mutants, size), key=lambda m: m.start)
        if mutants:
            plan[module] = mutants
    if listing:
        for module, mutants in plan.items():
            every = find_mutants(module, TARGETS[module])
            index = {(m.start, m.end, m.replacement): i for i, m in enumerate(every)}
            print(f"# {module}: {len(mutants)} mutants")
            for m in mutants:
                print(f"{m.path}#{index[(m.start, m.end, m.replacement)]}  :{m.line}  {m.function}  {m.description}")
        print(f"# all: {sum(len(m) for m in plan.values())} mutants")
        return 0
    harmless = _harmless()
    reports: list[Report] = []
    with tempfile.TemporaryDirectory(prefix="fedmisp-mutants-") as tmp:
        copy = _copy_tree(Path(tmp) / "repo")
        for module, mutants in plan.items():
            target = TARGETS[module]
            if not any((copy / t).exists() for t in target.tests):
                print(f"{module}: none of its tests exist ({', '.join(target.tests)}): skipped", file=sys.stderr)
                continue
            if timeout is None:
                outcome, baseline, failed = _pytest(copy, target.tests, timeout=3600)
                if outcome != "survived":
                    print(f"{module}: the tests fail without any mutant ({failed}); fix them first", file=sys.stderr)
                    return 2
                limit = baseline * timeout_factor + 30
                print(f"== {module}: {len(mutants)} mutants, tests take {baseline:.0f} s unmutated "
                      f"(timeout {limit:.0f} s)", flush=True)
            else:
                limit = timeout  # the unmutated run is skipped: a quick rerun of a few mutants
                print(f"== {module}: {len(mutants)} mutants (timeout {limit:.0f} s)", flush=True)
            report = Report(module)
            reports.append(report)
            path = copy / module
            original = path.read_bytes()
            try:
                for i, mutant in enumerate(mutants, 1):
                    path.write_bytes(apply(original, mutant))
                    _touch(path)  # a new mtime: no stale bytecode of another mutant is reused
                    outcome, seconds, failed = _pytest(copy, target.tests, limit)
                    report.results.append(Result(mutant, outcome, seconds, failed))
                    shutil.rmtree(copy / ".hypothesis" / "examples", ignore_errors=True)  # each mutant alone
                    mark = {"killed": ".", "timeout": "t", "survived": "S"}[outcome]
                    print(f"  [{i}/{len(mutants)}] {mark} {mutant.path}:{mutant.line} {mutant.description}"
                          + (f"  <- {failed}" if outcome == "killed" and failed else ""), flush=True)
            finally:
                path.write_bytes(original)
                _touch(path)
    real = _summary(reports, harmless)
    if json_out is not None:
        json_out.write_text(json.dumps([{"module": r.module, "results": [
            {**asdict(x.mutant), "description": x.mutant.description, "outcome": x.outcome,
             "seconds": round(x.seconds, 1), "failed": x.failed, "harmless": harmless.get(x.mutant.key)}
            for x in r.results]} for r in reports], indent=1))
    return 1 if real else 0


_clock = [time.time()]


def _touch(path: Path) -> None:
    _clock[0] = max(_clock[0] + 2, time.time())
    os.utime(path, (_clock[0], _clock[0]))


def _summary(reports: list[Report], harmless: dict[str, str]) -> int:
    """Prints the kill rates, then the real survivors apart from the harmless ones; returns how many are real."""
    print("\n== kill rate per module (killed / mutants; harmless survivors in brackets)")
    total = killed = judged = 0
    for r in reports:
        n, k = len(r.results), r.killed
        h = sum(1 for x in r.survivors() if x.mutant.key in harmless)
        total, killed, judged = total + n, killed + k, judged + h
        rate = f"{100 * k / n:.1f}%" if n else "-"
        print(f"  {r.module:36} {k:4}/{n:<4} {rate:>7}  [{h} harmless: {100 * (k + h) / n:.1f}% accounted for]"
              if n else f"  {r.module:36} no mutants")
    if total:
        print(f"  {'all':36} {killed:4}/{total:<4} {100 * killed / total:6.1f}%  "
              f"[{judged} harmless: {100 * (killed + judged) / total:.1f}% accounted for]")
    survivors = [x for r in reports for x in r.survivors()]
    real = [x for x in survivors if x.mutant.key not in harmless]
    print(f"\n== {len(real)} survivors no test notices and none judged harmless")
    for x in real:
        print(f"SURVIVED: {x.mutant.path}:{x.mutant.line}  {x.mutant.key}")
    print(f"\n== {len(survivors) - len(real)} survivors judged harmless (tools/mutants-harmless.txt)")
    for x in survivors:
        if x.mutant.key in harmless:
            print(f"harmless: {x.mutant.path}:{x.mutant.line}  {x.mutant.key}  ({harmless[x.mutant.key]})")
    return len(real)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--module", action="append", default=[],
                        help="a target whose path contains this (repeatable; default: every target)")
    parser.add_argument("--sample", type=int, help="at most this many mutants per module, drawn at random")
    parser.add_argument("--seed", type=int, default=0, help="for --sample")
    parser.add_argument("--timeout-factor", type=float, default=3.0,
                        help="a mutant's tests may take this many times the unmutated run (plus 30 s)")
    parser.add_argument("--json", type=Path, help="write every result here")
    parser.add_argument("--sample-for", action="append", default=[], metavar="PATTERN=N",
                        help="another sample size for the targets whose path contains PATTERN (repeatable)")
    parser.add_argument("--at", action="append", default=[], metavar="PATH:LINE|PATH#INDEX",
                        help="only the mutants of this line, or the one of this --list index (repeatable)")
    parser.add_argument("--survivors", action="append", type=Path, default=[], metavar="JSON",
                        help="only the survivors of an earlier run's --json (repeatable)")
    parser.add_argument("--timeout", type=float,
                        help="seconds per mutant; skips the unmutated run that otherwise sets the timeout")
    parser.add_argument("--list", action="store_true", help="list the mutants and stop")
    args = parser.parse_args(argv)
    per_module = {}
    for spec in args.sample_for:
        pattern, _, size = spec.rpartition("=")
        if not pattern or not size.isdigit():
            parser.error(f"--sample-for wants PATTERN=N, got {spec!r}")
        per_module[pattern] = int(size)
    modules = [m for m in TARGETS if not args.module or any(p in m for p in args.module)]
    if not modules:
        parser.error(f"no target matches {args.module}; targets: {', '.join(TARGETS)}")
    return run(modules, args.sample, args.seed, args.timeout_factor, args.json, args.list, per_module=per_module,
               at=[a for a in args.at], survivors=args.survivors, timeout=args.timeout)


if __name__ == "__main__":
    sys.exit(main())


__all__ = ["TARGETS", "Mutant", "find_mutants", "main"]
