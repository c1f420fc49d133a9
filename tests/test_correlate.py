"""Correlation against brute force, on a real store on disk.

- CIDR (hypothesis): random IPv4/IPv6 addresses and networks (/0, /32, /128, host bits set) stored
  as ip-dst/ip-src/domain|ip/ip-dst|port attributes, random queries; the engine's exact + cidr
  matches must equal what the stdlib ``ipaddress`` module says, both directions.
- ssdeep: a corpus of ppdeep hashes of random blobs and mutated copies (plus hand-made edge
  cases); for every query and threshold T in (1, 40, 80) the engine's matches must be exactly the
  stored hashes with ``ppdeep.compare(query, stored) >= T`` (100% recall, nothing extra).
- exact correlation: normalisation, composite halves, MISP's non-correlating and primary-only
  types, deleted and disable_correlation, exclusions, the over-correlation cap, correlation-only
  imports, and removal when a newer revision drops or deletes an element.

What the CIDR part holds the engine to (engine.py `_cidr`, plus exact equality from ix_value):
a query Q (an address is a /32 or /128) matches a stored IP or network S of the same family iff
    Q is inside S  (stored networks containing the query, S == Q included), or
    S is inside Q  (stored IPs and networks inside the query network).
For CIDR blocks that is the same as "the two overlap". Networks are taken with host bits cleared
(10.1.2.3/8 is 10.0.0.0/8), as MISP does when it correlates CIDR blocks.
"""
from __future__ import annotations

import ipaddress
import json
import random
import tempfile
import uuid as _uuid
from pathlib import Path
from typing import Any

import ppdeep
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from fedmisp.correlate.engine import Correlations, CorrelationConfig, Correlator
from fedmisp.correlate.keys import NON_CORRELATING_TYPES, PRIMARY_ONLY_TYPES, address_key, ip_key
from fedmisp.model.identity import Identity
from fedmisp.model.misp import ImportDefaults, parse_event
from fedmisp.model.revision import sign_event
from fedmisp.node.importer import import_paths
from fedmisp.store.events import WriteOutcome
from fedmisp.store.store import Store

from factories import ORG

IDENTITY = Identity.generate()
DEFAULTS = ImportDefaults(org_uuid=ORG["uuid"], org_name=ORG["name"], now=1_700_000_000)
TS = 1_700_000_500
# High enough that the over-correlation cap never hides a match in the brute-force comparisons.
NO_CAP = 10**6


# --- helpers ---------------------------------------------------------------------------------------

def new_uuid() -> str:
    return str(_uuid.uuid4())


def attr(type_: str, value: str, **fields: Any) -> dict[str, Any]:
    return {"uuid": new_uuid(), "type": type_, "value": value, "timestamp": str(TS), **fields}


def misp_event(attributes: list[dict[str, Any]], *, timestamp: int = TS, info: str = "correlation test",
               **fields: Any) -> dict[str, Any]:
    return {"uuid": new_uuid(), "info": info, "date": "2024-01-02", "timestamp": str(timestamp),
            "Orgc": ORG, "Attribute": attributes, **fields}


def signed(raw: dict[str, Any], store: Store | None = None):
    previous = store.previous_elements(raw["uuid"]).get if store is not None else None
    return sign_event(IDENTITY, parse_event(raw, DEFAULTS), previous)


def write(store: Store, *events: dict[str, Any]) -> None:
    assert store.write_events([signed(e, store) for e in events]) == [WriteOutcome.STORED] * len(events)


def newer(raw: dict[str, Any], seconds: int = 60, **changes: Any) -> dict[str, Any]:
    return {**raw, "timestamp": str(int(raw["timestamp"]) + seconds), **changes}


def uuids(found: Correlations, kind: str | None = None) -> set[str]:
    return {m.attribute_uuid for m in found.matches if kind is None or m.kind == kind}



@pytest.fixture
def node(tmp_path: Path):
    from fedmisp.node.home import init_home
    n, _key = init_home(tmp_path / "node", "Test CSIRT", "127.0.0.1:0")
    yield n
    n.close()


# --- CIDR against brute force (hypothesis) ---------------------------------------------------------

# Addresses are drawn near a few bases (the base with its low bits randomised), so stored networks
# and queries overlap often; the bases include the ends of both address spaces.
V4_BASES = (0x0A000000, 0x0A010203, 0xC0A80100, 0x00000000, 0xFFFFFFFF, 0x7F000001)
V6_BASES = (0x20010DB8 << 96, (0x20010DB8 << 96) | (1 << 64) | 5, 0, (1 << 128) - 1, 0xFE80 << 112)


@st.composite
def ip_texts(draw: st.DrawFn, networks: bool = True) -> str:
    """An IPv4 or IPv6 address, or (when `networks`) maybe a network with host bits possibly set,
    spelled as MISP users write them (IPv6 sometimes uncompressed, sometimes with /32 or /128)."""
    v6 = draw(st.booleans())
    bits = 128 if v6 else 32
    base = draw(st.sampled_from(V6_BASES if v6 else V4_BASES))
    spread = draw(st.integers(0, bits))
    address = base ^ draw(st.integers(0, (1 << spread) - 1))
    if v6:
        ip6 = ipaddress.IPv6Address(address)
        text = ip6.exploded if draw(st.booleans()) else str(ip6)  # uncompressed or canonical
    else:
        text = str(ipaddress.IPv4Address(address))
    if networks:
        prefix = draw(st.one_of(st.none(), st.sampled_from((0, bits, bits - 1, 8, 64 if v6 else 24)),
                                st.integers(0, bits)))
        if prefix is not None:
            text = f"{text}/{prefix}"
    return text


@st.composite
def stored_ip_attributes(draw: st.DrawFn) -> dict[str, Any]:
    """An attribute whose value is (or holds) an IP: networks only where MISP takes them."""
    if draw(st.integers(0, 3)) == 0:
        ip = draw(ip_texts(networks=False))
        type_ = draw(st.sampled_from(("domain|ip", "ip-dst|port", "ip-src|port")))
        # a domain of its own: its exact half must not correlate with another attribute's
        value = f"h{_uuid.uuid4().hex[:16]}.example|{ip}" if type_ == "domain|ip" else f"{ip}|443"
        return attr(type_, value)
    return attr(draw(st.sampled_from(("ip-dst", "ip-src"))), draw(ip_texts()))


def ip_part(a: dict[str, Any]) -> str:
    if a["type"] == "domain|ip":
        return a["value"].split("|")[1]
    if a["type"].endswith("|port"):
        return a["value"].split("|")[0]
    return a["value"]


def brute_force_cidr(stored: list[dict[str, Any]], query: str) -> set[str]:
    q = ipaddress.ip_network(query, strict=False)
    out = set()
    for a in stored:
        s = ipaddress.ip_network(ip_part(a), strict=False)
        if s.version != q.version:
            continue
        # stored networks containing the query (a query IP inside; an equal network or address),
        # and stored IPs and networks inside the query network
        if q.subnet_of(s) or s.subnet_of(q):
            out.add(a["uuid"])
    return out


@settings(max_examples=500, deadline=None)
@given(text=st.one_of(ip_texts(), st.text(alphabet="0123456789abcdefABCDEF:./%x ", max_size=45)))
def test_the_fast_address_key_agrees_with_ipaddress(text):
    """The write path keys single addresses with inet_pton; the index must be what ipaddress says."""
    key = address_key(text)
    try:
        network = ipaddress.ip_network(text, strict=False)
    except ValueError:
        network = None
    if key is not None:
        assert network is not None and network.prefixlen == network.max_prefixlen
        assert key == ip_key(network.network_address)
    elif "/" not in text and "%" not in text:
        assert network is None


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(stored=st.lists(stored_ip_attributes(), min_size=1, max_size=30),
       events=st.integers(1, 3), queries=st.lists(ip_texts(), min_size=1, max_size=6), data=st.data())
def test_cidr_and_exact_ip_matches_equal_brute_force_both_directions(stored, events, queries, data):
    # the stored values themselves as queries too (equal networks, exact addresses)
    queries = queries + [ip_part(a) for a in data.draw(st.lists(st.sampled_from(stored), max_size=3))]
    with tempfile.TemporaryDirectory() as tmp:
        store = Store(Path(tmp) / "store", map_size=1 << 28)
        try:
            raws = [misp_event(stored[i::events]) for i in range(events)]
            write(store, *[r for r in raws if r["Attribute"]])
            correlator = Correlator(store, CorrelationConfig(max_matches=NO_CAP))
            for query in queries:
                found = correlator.value(query, "ip-dst")
                assert found.over_correlating == {}
                assert {m.kind for m in found.matches} <= {"exact", "cidr"}
                assert uuids(found) == brute_force_cidr(stored, query), query
                assert len(found.matches) == len(uuids(found))  # each attribute listed once
            # MISP's RelatedAttribute direction: each held attribute against the other events
            for raw in raws:
                for a in raw["Attribute"][:2]:
                    others = [b for r in raws if r is not raw for b in r["Attribute"]]
                    found = correlator.attribute(raw["uuid"], a)
                    assert uuids(found) == brute_force_cidr(others, ip_part(a)), a["value"]
        finally:
            store.close()


def test_cidr_fixed_cases(store):
    """Readable anchors for the property above: /0, /32, /128, host bits set, both families."""
    a = {name: attr("ip-dst", value) for name, value in {
        "all4": "0.0.0.0/0", "ten8": "10.1.2.3/8", "host32": "10.1.2.3/32", "ip": "10.9.9.9",
        "all6": "::/0", "doc32": "2001:db8::1/32", "v6host": "2001:db8::5", "v6_128": "2001:0db8::7/128",
        "v4mapped": "::ffff:10.1.2.3",
    }.items()}
    write(store, misp_event(list(a.values())))
    c = Correlator(store, CorrelationConfig(max_matches=NO_CAP))

    def names(query: str) -> set[str]:
        found = uuids(c.value(query, "ip-dst"))
        return {k for k, v in a.items() if v["uuid"] in found}
    assert names("10.1.2.3") == {"all4", "ten8", "host32"}
    assert names("10.0.0.0/8") == {"all4", "ten8", "host32", "ip"}
    assert names("10.200.0.0/16") == {"all4", "ten8"}
    assert names("11.0.0.1") == {"all4"}
    assert names("0.0.0.0/0") == {"all4", "ten8", "host32", "ip"}
    assert names("2001:db8::5") == {"all6", "doc32", "v6host"}
    assert names("2001:db8:0:0:0:0:0:7") == {"all6", "doc32", "v6_128"}
    assert names("::/0") == {"all6", "doc32", "v6host", "v6_128", "v4mapped"}
    assert names("2001:db8::/31") == {"all6", "doc32", "v6host", "v6_128"}
    assert names("2001:db9::1") == {"all6"}


# --- ssdeep against brute force ---------------------------------------------------------------------

def _mutate(rng: random.Random, blob: bytes) -> bytes:
    """A similar file: chunks replaced, inserted or deleted; or grown/cut so the block size
    doubles or halves."""
    b = bytearray(blob)
    op = rng.random()
    if op < 0.12:
        return bytes(b + rng.randbytes(int(len(b) * rng.uniform(0.6, 1.2))))
    if op < 0.24:
        return bytes(b[:max(64, int(len(b) * rng.uniform(0.4, 0.6)))])
    heavy = op > 0.85  # many edits: low but non-zero scores
    for _ in range(rng.randint(6, 12) if heavy else rng.randint(1, 4)):
        n = max(1, int(len(b) * rng.uniform(0.005, 0.08)))
        at = rng.randrange(len(b) + 1)
        k = rng.random()
        if k < 0.4:
            b[at:at + n] = rng.randbytes(n)
        elif k < 0.7:
            b[at:at] = rng.randbytes(n)
        else:
            del b[at:at + n]
    return bytes(b)


# Hand-made edge cases (valid ssdeep values): identical short halves, block size double and half,
# long runs of one character (ssdeep collapses runs longer than 3 before comparing), a short
# first half equal to another's.
EDGE_HASHES = (
    "3:ab:c", "3:ab:c", "3:abcdef:xy", "3:abcdef:zz", "6:abcdef:zz",
    "96:ABCDEFGHIJKLMNOPQR:opqrstuvwxyz", "192:opqrstuvwxyzAB:abc", "48:xyz0123ABCDEFGHIJKL:ABCDEFGHIJKLMN",
    "96:ABCDEFGHIJKLMNOPQx:opqrstuvwxyq",
    "3:AAAAAAAAAAAAAAAAAAAAbcdefghij:kkkkkkkkkklmnopq", "3:AAAbcdefghijXY:kkklmnopqr",
    "3:AAAAbcdefghij:kkkkklmnopq", "6:kkkkkkklmnopqrs:AAA",
    "12:QQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQ:RRRRRRRRRRRRRRRR", "12:QQQQ:RRRR", "12:QQQ:RRRR",
)


def ssdeep_corpus() -> tuple[list[str], list[str]]:
    """(stored hashes, query-only hashes): families of similar files hashed with ppdeep."""
    rng = random.Random(20240517)
    stored: list[str] = []
    extra: list[str] = []
    for family in range(17):
        # 100 B .. 32 KiB: block sizes 3 .. 768; the smallest make scores capped low (bs/3 * length)
        size = int(2 ** rng.uniform(6.6, 15))
        base = rng.randbytes(size)
        blobs = [base] + [_mutate(rng, base) for _ in range(8)]
        blobs += [_mutate(rng, blobs[-1]) for _ in range(2)]  # mutations of mutations
        stored += [ppdeep.hash(b) for b in blobs]
        extra += [ppdeep.hash(_mutate(rng, base))]  # similar to the family, not stored
    stored += EDGE_HASHES
    extra += ["3:abcdef:qq", "192:ABCDEFGHIJKLMNOPQR:zz", "3:AAAAAAAbcdefghijZZ:kkkkkkkklmnopqXX", "12:QQQQQ:RRRRR",
              "24:opqrstuvwxyzAB:abcdefgh", "3:xyz:abc"]
    return stored, extra


@pytest.fixture(scope="module")
def ssdeep_store(tmp_path_factory):
    stored, extra = ssdeep_corpus()
    # stored as ssdeep and as the second half of filename|ssdeep, across a few events
    attributes = [attr("ssdeep", h) if i % 5 else attr("filename|ssdeep", f"f{i}.exe|{h}")
                  for i, h in enumerate(stored)]
    s = Store(tmp_path_factory.mktemp("ssdeep") / "store", map_size=1 << 30)
    write(s, *[misp_event(attributes[i::4]) for i in range(4)])
    yield s, attributes, extra
    s.close()


def _ssdeep_of(a: dict[str, Any]) -> str:
    return a["value"].split("|")[1] if a["type"] == "filename|ssdeep" else a["value"]


def test_ssdeep_recall_is_100_percent_against_brute_force(ssdeep_store):
    store, attributes, extra = ssdeep_store
    # every other stored hash (both spellings of each family member occur), all query-only ones
    queries = list(dict.fromkeys([_ssdeep_of(a) for a in attributes[::2]] + extra + list(EDGE_HASHES)))
    correlators = {t: Correlator(store, CorrelationConfig(ssdeep_threshold=t, max_matches=NO_CAP))
                   for t in (1, 40, 80)}
    positives = {1: 0, 40: 0, 80: 0}
    for query in queries:
        scores = {a["uuid"]: ppdeep.compare(query, _ssdeep_of(a)) for a in attributes}
        for t, correlator in correlators.items():
            found = correlator.value(query, "ssdeep")
            expected = {u for u, score in scores.items() if score >= t}
            assert found.over_correlating == {}
            missing, extra_found = expected - uuids(found), uuids(found) - expected
            assert not missing and not extra_found, (
                f"T={t} query {query}: missed "
                f"{[(_ssdeep_of(a), scores[a['uuid']]) for a in attributes if a['uuid'] in missing]}, "
                f"extra {[_ssdeep_of(a) for a in attributes if a['uuid'] in extra_found]}")
            for m in found.matches:
                assert m.score == (scores[m.attribute_uuid] if m.kind == "ssdeep" else 100)
                assert m.kind in ("ssdeep", "exact")
            positives[t] += len(expected)
            if t == 40 and query in extra:  # the ssdeep half of a filename|ssdeep query: the same
                assert uuids(correlator.value(f"query.exe|{query}", "filename|ssdeep")) == expected
    # the corpus really exercises every threshold (not vacuously empty), and T=1 sees weak matches
    assert positives[80] > 50 and positives[40] > positives[80] and positives[1] > positives[40]


def test_ssdeep_equal_empty_first_halves_are_found(store):
    """Regression (found here, fixed in 7d1f05c): an empty half had no index key, so two hashes of
    equal block size and equal empty first halves (ppdeep scores them 100) were never matched."""
    a = attr("ssdeep", "3::ABCDEFGH")
    write(store, misp_event([a]))
    assert ppdeep.compare("3::XYZWVUTS", "3::ABCDEFGH") == 100
    assert uuids(Correlator(store).value("3::XYZWVUTS", "ssdeep")) == {a["uuid"]}


def test_ssdeep_huge_block_size_neither_breaks_writes_nor_queries(tmp_path, node):
    """Regression (found here, fixed in 7d1f05c): block sizes were packed in 4 bytes, so a valid
    value with a block size >= 2**32 raised struct.error in correlation_rows (the whole import
    aborted, other files included) and in Correlator.value; >= 2**31 lost the second half's keys."""
    big = 2**32
    a = attr("ssdeep", f"{big}:abcdefghij:abcdefgh")
    b = attr("ssdeep", f"{big * 2}:abcdefghxx:qqq")  # scored against a's second half
    c = attr("ssdeep", f"{2**31}:zzzzzzzyx:abcdefghij")  # second half keyed at 2**32
    absurd = attr("ssdeep", f"{2**70}:abcdefghij:abcdefgh")  # not indexed (no real input), not fatal
    path = tmp_path / "huge.json"
    path.write_text(json.dumps({"Event": misp_event([a, b, c, absurd])}))
    other = tmp_path / "other.json"
    other.write_text(json.dumps({"Event": misp_event([attr("md5", "a" * 32)])}))
    assert import_paths(node, [path, other], workers=0).events_stored == 2
    correlator = Correlator(node.store, CorrelationConfig(ssdeep_threshold=1))
    for query in (f"{big}:abcdefghix:abcdefgh", f"{big * 2}:abcdefghxx:q", f"{2**31}:xxxxxxxy:abcdefghij",
                  f"{2**70}:abcdefghij:abcdefgh", f"{10**30}:abc:abc"):
        found = uuids(correlator.value(query, "ssdeep"))
        expected = {x["uuid"] for x in (a, b, c, absurd) if ppdeep.compare(query, x["value"]) >= 1}
        if query.startswith(str(2**70)):
            assert found == {absurd["uuid"]}  # the identical value, by exact match
        else:
            assert found == expected, query


# --- exact correlation --------------------------------------------------------------------------------

def test_exact_matches_normalised_forms(store):
    md5 = "9e107d9d372bb6826bd81d3542a419d6"
    stored = {
        "md5": attr("md5", md5), "md5_upper": attr("md5", md5.upper().replace("9E1", "8E1")),
        "domain": attr("domain", "evil.example"), "url": attr("url", "http://evil.example/x/y?z=1"),
        "ipv6": attr("ip-dst", "2001:db8::1"), "defanged": attr("domain", "bad[.]example"),
        "host": attr("hostname", "WWW.Bad.Example"),
    }
    write(store, misp_event(list(stored.values())))
    c = Correlator(store)

    def names(value: str, type_: str | None) -> set[str]:
        found = c.value(value, type_)
        assert {m.kind for m in found.matches} <= {"exact", "cidr"}
        return {k for k, a in stored.items() if a["uuid"] in uuids(found)}
    assert names(md5.upper(), "md5") == {"md5"}
    assert names(md5.upper(), None) == {"md5"}  # no type: the value and its lower case
    assert names(md5.replace("9e1", "8e1"), "md5") == {"md5_upper"}  # stored upper-case
    assert names("evil[.]example", "domain") == {"domain"}
    assert names("EVIL.example.", "domain") == {"domain"}
    assert names("hxxp://evil[.]example/x/y?z=1", "url") == {"url"}
    assert names("2001:0db8:0000:0000:0000:0000:0000:0001", "ip-dst") == {"ipv6"}
    assert names("2001:DB8::1", None) == {"ipv6"}
    assert names("bad.example", "domain") == {"defanged"}  # stored defanged
    assert names("www.bad.example", "hostname") == {"host"}
    assert names("evil.example.com", "domain") == set()


def test_both_halves_of_composite_values_correlate(store):
    md5 = "d41d8cd98f00b204e9800998ecf8427e"
    fm = attr("filename|md5", f"evil.exe|{md5.upper()}")
    di = attr("domain|ip", "c2.example|192.0.2.1")
    other = misp_event([attr("domain", "c2.example"), attr("ip-dst", "192.0.2.1"), attr("md5", md5),
                        attr("filename", "evil.exe")])
    mine = misp_event([fm, di])
    write(store, mine, other)
    c = Correlator(store)
    assert uuids(c.value(md5, "md5")) == {fm["uuid"], other["Attribute"][2]["uuid"]}
    assert uuids(c.value("evil.exe", "filename")) == {fm["uuid"], other["Attribute"][3]["uuid"]}
    assert uuids(c.value("c2.example", "domain")) == {di["uuid"], other["Attribute"][0]["uuid"]}
    ip = c.value("192.0.2.1", "ip-dst")  # exact and CIDR both find it; listed once
    assert uuids(ip) == {di["uuid"], other["Attribute"][1]["uuid"]} and len(ip.matches) == 2
    assert uuids(c.value("c2.example|192.0.2.1", "domain|ip")) == {
        di["uuid"], other["Attribute"][0]["uuid"], other["Attribute"][1]["uuid"]}
    # MISP's RelatedAttribute: both halves of each composite, in other events only
    assert uuids(c.attribute(mine["uuid"], fm)) == {other["Attribute"][2]["uuid"], other["Attribute"][3]["uuid"]}
    assert uuids(c.attribute(mine["uuid"], di)) == {other["Attribute"][0]["uuid"], other["Attribute"][1]["uuid"]}


def test_primary_only_types_correlate_on_their_first_half(store):
    assert PRIMARY_ONLY_TYPES == {"ip-src|port", "ip-dst|port", "hostname|port"}
    ip_port = attr("ip-dst|port", "192.0.2.9|443")
    host_port = attr("hostname|port", "www.example|8080")
    mine = misp_event([ip_port, host_port])
    other = misp_event([attr("ip-src|port", "192.0.2.10|443"), attr("ip-dst", "192.0.2.9"),
                        attr("hostname", "www.example"), attr("hostname|port", "api.example|8080")])
    write(store, mine, other)
    c = Correlator(store)
    assert uuids(c.value("192.0.2.9", "ip-dst")) == {ip_port["uuid"], other["Attribute"][1]["uuid"]}
    assert uuids(c.value("www.example", "hostname")) == {host_port["uuid"], other["Attribute"][2]["uuid"]}
    # the same port on another ip or host is no correlation
    assert uuids(c.attribute(mine["uuid"], ip_port)) == {other["Attribute"][1]["uuid"]}
    assert uuids(c.attribute(mine["uuid"], host_port)) == {other["Attribute"][2]["uuid"]}
    assert uuids(c.value("192.0.2.9|80", "ip-dst|port")) == {ip_port["uuid"], other["Attribute"][1]["uuid"]}


def test_the_port_half_of_primary_only_types_never_correlates(store):
    """Regression (found here, fixed in 7d1f05c): ix_value holds both halves of ip|port, and a hit
    on the port half was listed, so a text attribute '443' correlated with '192.0.2.9|443'."""
    ip_port = attr("ip-dst|port", "192.0.2.9|443")
    text = attr("text", "443")
    mine, other = misp_event([ip_port]), misp_event([text])
    write(store, mine, other)
    c = Correlator(store)
    assert uuids(c.attribute(other["uuid"], text)) == set()
    assert uuids(c.value("443", "text")) == {text["uuid"]}
    assert uuids(c.value("443")) == {text["uuid"]}
    host_port = attr("hostname|port", "www.example|8443")
    write(store, misp_event([host_port]))
    assert uuids(c.value("8443", "text")) == set()
    assert uuids(c.value("www.example", "hostname")) == {host_port["uuid"]}


def test_non_correlating_types_never_match(store):
    values = {"comment": "443", "http-method": "GET", "aba-rtn": "011000015", "gender": "Male",
              "counter": "443", "integer": "443", "float": "443", "port": "443", "nationality": "French",
              "cortex": "443", "boolean": "1", "anonymised": "443"}
    assert set(values) == NON_CORRELATING_TYPES
    silent = misp_event([attr(t, v) for t, v in values.items()])
    controls = misp_event([attr("text", v) for v in sorted(set(values.values()))])
    write(store, silent, controls)
    c = Correlator(store)
    control_uuids = {a["uuid"] for a in controls["Attribute"]}
    for t, v in values.items():
        assert uuids(c.value(v, "text")) <= control_uuids, t  # the control is found, never the type
        assert uuids(c.value(v, "text")), t
        assert uuids(c.attribute(silent["uuid"], next(a for a in silent["Attribute"] if a["type"] == t))) == set()


NET_VALUES = {"ip-dst": "198.51.100.0/24", "ssdeep": "96:abcdefghijklmnop:abcdefgh", "domain": "quiet.example",
              "ip-src": "198.51.100.77"}
# query -> the NET_VALUES types it finds in an event that correlates
NET_QUERIES = {
    ("198.51.100.7", "ip-dst"): {"ip-dst"},  # IP -> network containing it
    ("198.51.100.0/25", "ip-dst"): {"ip-dst", "ip-src"},  # network -> network around it, IP inside it
    ("96:abcdefghijklmnoq:abcdefgz", "ssdeep"): {"ssdeep"},
    ("quiet.example", "domain"): {"domain"},
}


def _found_types(c: Correlator, event: dict[str, Any]) -> dict[tuple[str, str], set[str]]:
    """For each NET_QUERIES query: the types of the attributes of `event` it finds."""
    types = {a["uuid"]: a["type"] for a in event["Attribute"]}
    return {q: {types[u] for u in uuids(c.value(*q)) if u in types} for q in NET_QUERIES}


def test_deleted_and_disable_correlation_never_match(store):
    control = misp_event([attr(t, v) for t, v in NET_VALUES.items()])
    deleted = misp_event([attr(t, v, deleted=True) for t, v in NET_VALUES.items()])
    disabled = misp_event([attr(t, v, disable_correlation=True) for t, v in NET_VALUES.items()])
    event_disabled = misp_event([attr(t, v) for t, v in NET_VALUES.items()], disable_correlation=True)
    write(store, control, deleted, disabled, event_disabled)
    c = Correlator(store)
    assert _found_types(c, control) == NET_QUERIES  # the control: exact, CIDR both ways, ssdeep
    for raw in (deleted, disabled, event_disabled):
        assert _found_types(c, raw) == dict.fromkeys(NET_QUERIES, set()), raw["Attribute"][0]
    # and as the querying side (RelatedAttribute): nothing for them, the event flag included
    for a in deleted["Attribute"] + disabled["Attribute"]:
        assert c.attribute(deleted["uuid"], a).matches == []
    meta = store.event_meta(event_disabled["uuid"])
    assert meta is not None and meta.correlation_disabled
    view = c.annotate(store.export_event(event_disabled["uuid"]))
    assert "RelatedEvent" not in view["Event"]
    assert all("RelatedAttribute" not in a for a in view["Event"]["Attribute"])
    view = c.annotate(store.export_event(control["uuid"]))
    assert "RelatedEvent" not in view["Event"]  # nothing else correlates with the control


def test_exclusions_exact_and_wildcard(store):
    stored = {name: attr(t, v) for name, (t, v) in {
        "sub": ("domain", "a.example.org"), "bare": ("domain", "example.org"), "ip": ("ip-dst", "192.0.2.1"),
        "ip2": ("ip-dst", "192.0.2.2"), "ip10": ("ip-dst", "192.0.2.10"), "sink": ("domain", "x-sinkhole-y.example"),
        "mail": ("hostname", "mail.example.org"),
    }.items()}
    write(store, misp_event(list(stored.values())))
    c = Correlator(store, CorrelationConfig(exclusions=("%.EXAMPLE.org", "192.0.2.1", "%sinkhole%")))

    def names(value: str, type_: str, correlator: Correlator = c) -> set[str]:
        return {k for k, a in stored.items() if a["uuid"] in uuids(correlator.value(value, type_))}
    found = c.value("a.example.org", "domain")
    assert found.matches == [] and found.excluded == ["a.example.org"]
    assert names("mail.example.org", "hostname") == set()  # '%' wildcard, case-insensitive
    assert names("example.org", "domain") == {"bare"}  # '%.' needs the dot: the bare domain stays
    found = c.value("192.0.2.1", "ip-dst")
    assert found.matches == [] and found.excluded == ["192.0.2.1"]
    assert names("192.0.2.10", "ip-dst") == {"ip10"}  # an exact exclusion covers no longer value
    # an excluded stored value is not listed when a query reaches it another way (CIDR)
    assert names("192.0.2.0/24", "ip-dst") == {"ip2", "ip10"}
    assert names("x-sinkhole-y.example", "domain") == set()
    # without the list, all of them correlate
    plain = Correlator(store)
    assert names("192.0.2.0/24", "ip-dst", plain) == {"ip", "ip2", "ip10"}
    assert names("a.example.org", "domain", plain) == {"sub"}
    assert names("x-sinkhole-y.example", "domain", plain) == {"sink"}


def test_over_correlating_values_are_reported_not_listed(store):
    events = [misp_event([attr("ip-dst", "203.0.113.7"), attr("domain", f"d{i}.example")]) for i in range(6)]
    events.append(misp_event([attr("ip-dst", "203.0.113.0/24")]))
    write(store, *events)
    capped = Correlator(store, CorrelationConfig(max_matches=5))
    found = capped.value("203.0.113.7", "ip-dst")
    assert found.over_correlating.get("203.0.113.7") == 6
    # the network containing it is still listed; the six copies of the address are not
    assert uuids(found) == {events[-1]["Attribute"][0]["uuid"]}
    # a network query reaching more stored IPs than the cap: reported, not listed
    found = capped.value("203.0.113.0/28", "ip-dst")
    assert found.over_correlating.get("203.0.113.0/28", 0) > 5
    assert uuids(found) == {events[-1]["Attribute"][0]["uuid"]}
    # at or under the cap everything is listed and nothing reported
    found = Correlator(store, CorrelationConfig(max_matches=6)).value("203.0.113.7", "ip-dst")
    assert found.over_correlating == {} and len(uuids(found)) == 7
    assert len(uuids(capped.value("d3.example", "domain"))) == 1


def test_correlation_only_sources_are_matched_with_their_source_and_never_shown(node, tmp_path):
    feed = misp_event([attr("ip-dst", "192.0.2.50"), attr("domain", "feed-only.example")], info="feed event")
    own = misp_event([attr("ip-dst", "192.0.2.50")], info="own event")
    (tmp_path / "feed.json").write_text(json.dumps({"Event": feed}))
    (tmp_path / "own.json").write_text(json.dumps({"Event": own}))
    assert import_paths(node, [tmp_path / "feed.json"], workers=0, source="osint-feed",
                        correlation_only=True).events_stored == 1
    assert import_paths(node, [tmp_path / "own.json"], workers=0).events_stored == 1
    store = node.store
    assert set(store.event_uuids()) == {own["uuid"]}
    assert set(store.event_uuids(include_correlation_only=True)) == {own["uuid"], feed["uuid"]}
    c = Correlator(store)
    by_event = {m.event_uuid: m for m in c.value("192.0.2.50", "ip-dst").matches}
    assert set(by_event) == {own["uuid"], feed["uuid"]}
    assert by_event[feed["uuid"]].source == "osint-feed" and by_event[feed["uuid"]].correlation_only
    assert by_event[own["uuid"]].source == "" and not by_event[own["uuid"]].correlation_only
    view = c.annotate(store.export_event(own["uuid"]))["Event"]
    related = view["Attribute"][0]["RelatedAttribute"]
    assert [(r["event_uuid"], r.get("source")) for r in related] == [(feed["uuid"], "osint-feed")]
    assert "RelatedEvent" not in view  # the feed's event is named as a source, never shown
    [m] = c.value("feed-only.example", "domain").matches
    assert m.correlation_only and m.source == "osint-feed"


def test_correlations_go_when_a_newer_revision_drops_or_deletes_the_element(store):
    dropped = attr("ip-dst", "192.0.2.0/24")
    deleted = attr("ssdeep", "96:abcdefghijklmnop:abcdefgh")
    kept = attr("domain", "kept.example")
    address = attr("ip-src", "198.51.100.3")
    raw = misp_event([dropped, deleted, kept, address])
    write(store, raw)
    c = Correlator(store)
    queries = {"dropped": ("192.0.2.77", "ip-dst"), "deleted": ("96:abcdefghijklmnoq:abcdefgh", "ssdeep"),
               "kept": ("kept.example", "domain"), "address": ("198.51.100.0/24", "ip-dst")}
    assert {k: bool(c.value(*q).matches) for k, q in queries.items()} == dict.fromkeys(queries, True)
    later = newer(raw, Attribute=[dict(deleted, deleted=True, timestamp=str(TS + 60)), kept])
    write(store, later)
    assert {k: bool(c.value(*q).matches) for k, q in queries.items()} == {
        "dropped": False, "deleted": False, "kept": True, "address": False}
    assert c.value("192.0.2.0/24", "ip-dst").matches == []  # exact gone too
    with store.database.env.begin() as txn:  # and no index row left behind for the dropped ones
        assert txn.stat(store.database.db["ix_net"])["entries"] == 0 and txn.stat(store.database.db["ix_ip"])["entries"] == 0
        assert txn.stat(store.database.db["ix_ssdeep"])["entries"] == 0


def test_removal_through_the_real_import_path(node, tmp_path):
    a, b = attr("ip-dst", "10.20.0.0/16"), attr("ip-dst", "10.20.30.40")
    raw = misp_event([a, b])
    path = tmp_path / "e.json"
    path.write_text(json.dumps({"Event": raw}))
    import_paths(node, [path], workers=0)
    c = Correlator(node.store)
    assert uuids(c.value("10.20.30.40", "ip-dst")) == {a["uuid"], b["uuid"]}
    path.write_text(json.dumps({"Event": newer(raw, Attribute=[b])}))
    assert import_paths(node, [path], workers=0).events_stored == 1
    assert uuids(c.value("10.20.30.40", "ip-dst")) == {b["uuid"]}
    assert uuids(c.value("10.20.0.0/16", "ip-dst")) == {b["uuid"]}


def test_turning_event_correlation_back_on_restores_cidr_and_ssdeep(store):
    """Regression (found here, fixed in 7d1f05c): a newer revision kept the rows of the elements it
    shares with the held one, computed under the old disable_correlation, so turning correlation
    back on left CIDR and ssdeep matches missing (exact worked: ix_value ignores the flag)."""
    net, fuzzy = attr("ip-dst", "10.0.0.0/8"), attr("ssdeep", "3:abcdefghij:abcdefgh")
    raw = misp_event([net, fuzzy], disable_correlation=True)
    write(store, raw)
    c = Correlator(store)
    assert c.value("10.1.1.1", "ip-dst").matches == []
    write(store, newer(raw, disable_correlation=False))
    assert not store.event_meta(raw["uuid"]).correlation_disabled
    assert uuids(c.value("10.0.0.0/8", "ip-dst")) == {net["uuid"]}  # exact: fine
    assert uuids(c.value("10.1.1.1", "ip-dst")) == {net["uuid"]}  # CIDR
    assert uuids(c.value("3:abcdefghij:abcdefgx", "ssdeep")) == {fuzzy["uuid"]}  # ssdeep
    assert store.check_integrity() == []
    write(store, newer(raw, 120, disable_correlation=True))  # and off again: hidden, nothing left over
    assert c.value("10.1.1.1", "ip-dst").matches == [] and store.check_integrity() == []


def test_turning_event_correlation_off_hides_it(store):
    net = attr("ip-dst", "10.0.0.0/8")
    raw = misp_event([net])
    write(store, raw)
    c = Correlator(store)
    assert uuids(c.value("10.1.1.1", "ip-dst")) == {net["uuid"]}
    write(store, newer(raw, disable_correlation=True))
    assert c.value("10.1.1.1", "ip-dst").matches == [] and c.value("10.0.0.0/8", "ip-dst").matches == []
