"""restSearch returnFormat zeek: a Zeek (Bro) Intel framework file (MISP's ZeekExport).

One header line, then one tab-separated line per indicator: the value, its Intel type, the source
(this node, the event uuid and its creator org), a description (event info and attribute comment),
the URL field ("-": unset; a feed reader knows the event by its uuid in the source), do_notice T and
if_in "-". A composite attribute gives a line for each half Zeek can match (domain|ip: a DOMAIN and
an ADDR; filename|sha256: a FILE_NAME and a FILE_HASH; ip-dst|port: the ADDR alone, as MISP does).
Types Zeek cannot match are skipped. Load the file with `redef Intel::read_files += {"misp.intel"};`.
"""
from __future__ import annotations

from typing import Any, Iterable, Iterator

from fedmisp.export.filters import indicator_parts

from fedmisp.store import query

HEADER = "#fields\tindicator\tindicator_type\tmeta.source\tmeta.desc\tmeta.url\tmeta.do_notice\tmeta.if_in\n"

_FILE_HASHES = ("md5", "sha1", "sha224", "sha256", "sha384", "sha512", "sha512/224", "sha512/256", "authentihash",
                "ssdeep", "imphash", "pehash", "impfuzzy", "tlsh", "cdhash")
# MISP type -> the Intel type of each part of the value (None: that part is not matched)
INTEL_TYPES: dict[str, tuple[str | None, ...]] = {
    "ip-src": ("ADDR",), "ip-dst": ("ADDR",), "ip-src|port": ("ADDR", None), "ip-dst|port": ("ADDR", None),
    "domain": ("DOMAIN",), "hostname": ("DOMAIN",), "domain|ip": ("DOMAIN", "ADDR"),
    "url": ("URL",), "user-agent": ("SOFTWARE",),
    "email-src": ("EMAIL",), "email-dst": ("EMAIL",), "target-email": ("EMAIL",),
    "filename": ("FILE_NAME",), "email-attachment": ("FILE_NAME",), "pdb": ("FILE_NAME",),
    "malware-sample": ("FILE_NAME", "FILE_HASH"),
    "x509-fingerprint-sha1": ("CERT_HASH",),
    **{t: ("FILE_HASH",) for t in _FILE_HASHES},
    **{f"filename|{t}": ("FILE_NAME", "FILE_HASH") for t in _FILE_HASHES},
}


def _field(text: str) -> str:
    """A value in one tab-separated field: tabs and line breaks would split the line."""
    cleaned = " ".join(text.replace("\t", " ").replace("\v", " ").splitlines()).strip()
    return cleaned or "-"


def lines(a: dict[str, Any], head: query.EventHead, source: str) -> Iterator[str]:
    kinds = INTEL_TYPES.get(a["type"])
    if kinds is None:
        return
    parts = indicator_parts(a)
    if len(parts) != len(kinds):
        parts = a["value"].split("|", 1) if len(kinds) == 2 else [a["value"]]
    h = head.header
    origin = _field(f"{source} ({head.uuid}) - {h['Orgc']['name']}")
    comment = a.get("comment", "")
    desc = _field(f"{h['info']}. {comment}" if comment else h["info"])
    for kind, part in zip(kinds, parts):
        if kind is None:
            continue
        if kind == "ADDR" and "/" in part:
            kind = "SUBNET"
        if a["type"] == "url":
            # Zeek's URL indicators are matched without the scheme
            part = part.split("://", 1)[1] if part.lower().startswith(("http://", "https://")) else part
        yield f"{_field(part)}\tIntel::{kind}\t{origin}\t{desc}\t-\tT\t-\n"


def intel(found: Iterable[tuple[query.EventHead, dict[str, Any]]], source: str = "fedmisp") -> Iterator[str]:
    yield HEADER
    for head, a in found:
        yield from lines(a, head, source)
