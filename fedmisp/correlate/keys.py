"""Correlation index keys: which rows an attribute adds to the CIDR and ssdeep indexes.

Pure functions of an element (the store writes the rows as data arrives and deletes them with the
element; `correlate/engine.py` reads them). Exact correlation reads the store's value index.

- IP addresses: `ix_ip`, key = family (1) | address (16), sorted, so "stored IPs inside a network"
  is one range scan.
- Networks: `ix_net`, key = family (1) | prefix length (1) | network address (16), so "stored
  networks containing an IP" is one lookup per prefix length in use.
- ssdeep: `ix_ssdeep`, key = block size (8) | 6-gram. Two ssdeep hashes score above 0 only if their
  compared halves share a 7-character substring (after runs of more than 3 identical characters are
  collapsed), at equal or doubled block size; so a hash is indexed under (bs, grams of its first
  half) and (2 * bs, grams of its second half), and a query looks up the same two. Only the 6-grams
  at even positions of a stored half are indexed, and a query looks up its 6-grams at every
  position: a common 7-character substring holds two 6-grams of the stored half, at consecutive
  positions, so one of them is indexed and the query has it too. Half the rows of indexing every
  7-gram; candidates are scored with ppdeep either way (docs/decisions/0004). Store format 1 indexed
  every 7-gram (`ssdeep_keys(..., legacy=True)`); opening such a store rebuilds the index.
"""
from __future__ import annotations

import ipaddress
import struct
from socket import AF_INET, AF_INET6, inet_pton
from typing import Any

# MISP's Attribute::NON_CORRELATING_TYPES
NON_CORRELATING_TYPES = frozenset({
    "comment", "http-method", "aba-rtn", "gender", "counter", "integer", "float", "port", "nationality",
    "cortex", "boolean", "anonymised",
})
# MISP's PRIMARY_ONLY_CORRELATING_TYPES: the port does not correlate
PRIMARY_ONLY_TYPES = frozenset({"ip-src|port", "ip-dst|port", "hostname|port"})
# Types whose value (or one half) is an IP address or network, and which half.
IP_PARTS = {"ip-src": 0, "ip-dst": 0, "ip-src|port": 0, "ip-dst|port": 0, "domain|ip": 1}
SSDEEP_PARTS = {"ssdeep": 0, "filename|ssdeep": 1}
CORRELATION_ROW_TYPES = frozenset(IP_PARTS) | frozenset(SSDEEP_PARTS)  # the only types with rows here

ROLLING_WINDOW = 7  # ssdeep's: a shorter common substring scores 0
GRAM = ROLLING_WINDOW - 1  # indexed at every other position, looked up at every position
V4, V6 = b"\x04", b"\x06"
_BE8 = struct.Struct(">Q")
# ssdeep block sizes are 3 * 2**n; anything at or above this cannot come from a real input
# (2**62 bytes) and is not indexed rather than allowed to overflow a key.
MAX_BLOCK_SIZE = 2**62


def correlates(element: dict[str, Any], event_disabled: bool = False) -> bool:
    """Whether an attribute takes part in correlation at all (MISP's rules)."""
    return not (event_disabled or element.get("deleted") or element.get("disable_correlation")
                or element.get("type") in NON_CORRELATING_TYPES)


def correlation_values(type_: str, keys: tuple[str, ...]) -> tuple[str, ...]:
    """The normalised values of an attribute that correlate exactly (the port of ip|port does not)."""
    if type_ in PRIMARY_ONLY_TYPES:
        return keys[:1]
    return keys


def parse_ip(text: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network | None:
    try:
        return ipaddress.ip_network(text, strict=False)
    except ValueError:
        return None


def ip_key(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bytes:
    if address.version == 4:
        return V4 + b"\x00" * 12 + address.packed
    return V6 + address.packed


_V4_PAD = V4 + b"\x00" * 12


def address_key(text: str) -> bytes | None:
    """`ip_key` of a single address written without a prefix length, else None.

    inet_pton instead of ipaddress (about 1.5 against 10 us): both take exactly the dotted quad
    without leading zeros for IPv4, and the forms of RFC 4291 for IPv6 (tests/test_correlate.py
    compares them)."""
    if "/" in text or "%" in text:
        return None
    try:
        return _V4_PAD + inet_pton(AF_INET, text)
    except (OSError, ValueError):  # ValueError: an embedded NUL
        pass
    try:
        return V6 + inet_pton(AF_INET6, text)
    except (OSError, ValueError):
        return None


def net_key(network: ipaddress.IPv4Network | ipaddress.IPv6Network) -> bytes:
    family = V4 if network.version == 4 else V6
    address = network.network_address.packed.rjust(16, b"\x00")
    return family + bytes([network.prefixlen]) + address


def strip_sequences(s: str) -> str:
    """ssdeep's collapse of runs longer than 3 identical characters."""
    out = list(s[:3])
    for i in range(3, len(s)):
        if s[i] != s[i - 1] or s[i] != s[i - 2] or s[i] != s[i - 3]:
            out.append(s[i])
    return "".join(out)


def parse_ssdeep(text: str) -> tuple[int, str, str] | None:
    parts = text.split(":")
    if len(parts) != 3 or not parts[0].isdigit():
        return None
    return int(parts[0]), strip_sequences(parts[1]), strip_sequences(parts[2])


def _grams(s: str, step: int, size: int = GRAM) -> list[bytes]:
    """The distinct `size`-grams of `s` at every `step`-th position from 0; a half shorter than a
    common substring can be (7) is its own key: identical short (even empty) halves score 100."""
    if len(s) < ROLLING_WINDOW:
        return [b"=" + s.encode()]
    return list(dict.fromkeys(s[i:i + size].encode() for i in range(0, len(s) - size + 1, step)))


def ssdeep_keys(text: str, *, query: bool = False, legacy: bool = False) -> list[bytes]:
    """The index keys of one ssdeep hash; with `query`, the keys a query for it looks up (a superset:
    every position's gram). `legacy`: store format 1's keys (every 7-gram, for index and query)."""
    parsed = parse_ssdeep(text)
    if parsed is None:
        return []
    bs, s1, s2 = parsed
    if bs >= MAX_BLOCK_SIZE:
        return []
    if legacy:
        step, size = 1, ROLLING_WINDOW
    else:
        step, size = (1 if query else 2), GRAM
    first, second = _BE8.pack(bs), _BE8.pack(bs * 2)
    keys = [first + g for g in _grams(s1, step, size)]
    keys.extend(second + g for g in _grams(s2, step, size))
    return list(dict.fromkeys(keys))


def correlation_rows(element: dict[str, Any], keys: tuple[str, ...], ref: bytes,
                     event_disabled: bool = False) -> list[tuple[str, bytes, bytes]]:
    """(database, key, value) rows for the CIDR and ssdeep indexes; none for non-correlating data."""
    type_ = element.get("type")
    if type_ not in CORRELATION_ROW_TYPES or not keys or not correlates(element, event_disabled):
        return []
    rows: list[tuple[str, bytes, bytes]] = []
    part = IP_PARTS.get(type_)
    if part is not None and part < len(keys):
        key = address_key(keys[part])
        network = parse_ip(keys[part]) if key is None else None
        if key is not None:
            rows.append(("ix_ip", key, ref))
        elif network is not None:
            if network.prefixlen == network.max_prefixlen:
                rows.append(("ix_ip", ip_key(network.network_address), ref))
            else:
                rows.append(("ix_net", net_key(network), ref))
    part = SSDEEP_PARTS.get(type_)
    if part is not None and part < len(keys):
        rows.extend(("ix_ssdeep", key, ref) for key in ssdeep_keys(keys[part]))
    return rows
