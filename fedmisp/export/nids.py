"""restSearch returnFormat suricata / snort: IDS rules for network indicators (MISP's NidsExport).

Rules are written for the attribute types a network IDS can match (IP addresses with or without a
port, domains and hostnames, URLs, user agents); other types are skipped, as MISP does. Every rule
says which event it comes from. `sid`s are numbered from SID_BASE within one export, so they are
unique in the rule file the export produces (an attribute's 56-bit id does not fit a 32-bit sid).
"""
from __future__ import annotations

from typing import Any, Iterable, Iterator

from fedmisp.export.filters import indicator_parts
from fedmisp.store import query

SID_BASE = 4_000_000  # MISP's default NIDS_sid
TYPES = ("ip-src", "ip-dst", "ip-src|port", "ip-dst|port", "domain", "hostname", "url", "user-agent")
_ESCAPE = {ord(c): f"|{ord(c):02X}|" for c in '|";\\:\r\n'}


def _content(text: str) -> str:
    """A rule content string: the bytes rule parsers treat as syntax written as |hex|."""
    return text.translate(_ESCAPE)


def _dns_labels(domain: str) -> str:
    """A domain as it appears in a DNS query on the wire (snort has no dns.query buffer)."""
    return "".join(f"|{len(label):02X}|{_content(label)}" for label in domain.strip(".").split(".")) + "|00|"


def rule(a: dict[str, Any], head: query.EventHead, sid: int, flavour: str) -> str | None:
    t, v = a["type"], "|".join(indicator_parts(a)) if a["type"] in TYPES else a["value"]
    orgc = head.header["Orgc"]["name"].replace('"', "'").replace(";", ",")
    msg = f'MISP e{head.id} [{orgc}] {t}: {_content(v)}'
    tail = f'classtype:trojan-activity; sid:{sid}; rev:1; priority:1; reference:url,{head.uuid};'
    if t in ("ip-src", "ip-dst", "ip-src|port", "ip-dst|port"):
        ip, _, port = v.partition("|")
        port = port or "any"
        if ":" in ip:
            ip = f"[{ip}]"
        if t.startswith("ip-dst"):
            return f'alert ip $HOME_NET any -> {ip} {port} (msg:"{msg}"; {tail})'
        return f'alert ip {ip} {port} -> $HOME_NET any (msg:"{msg}"; {tail})'
    if t in ("domain", "hostname"):
        if flavour == "suricata":
            return (f'alert dns $HOME_NET any -> any any (msg:"{msg}"; dns.query; content:"{_content(v)}"; '
                    f'nocase; endswith; {tail})')
        return (f'alert udp $HOME_NET any -> any 53 (msg:"{msg}"; content:"{_dns_labels(v)}"; nocase; '
                f'fast_pattern; {tail})')
    if t == "url":
        if flavour == "suricata":
            return (f'alert http $HOME_NET any -> $EXTERNAL_NET any (msg:"{msg}"; http.uri; '
                    f'content:"{_content(_path(v))}"; nocase; {tail})')
        return (f'alert tcp $HOME_NET any -> $EXTERNAL_NET $HTTP_PORTS (msg:"{msg}"; flow:to_server,established; '
                f'content:"{_content(_path(v))}"; nocase; http_uri; {tail})')
    if t == "user-agent":
        if flavour == "suricata":
            return (f'alert http $HOME_NET any -> $EXTERNAL_NET any (msg:"{msg}"; http.user_agent; '
                    f'content:"{_content(v)}"; {tail})')
        return (f'alert tcp $HOME_NET any -> $EXTERNAL_NET $HTTP_PORTS (msg:"{msg}"; flow:to_server,established; '
                f'content:"{_content(v)}"; http_header; {tail})')
    return None


def _path(url: str) -> str:
    """The part of a URL an HTTP request line carries (after the host)."""
    rest = url.split("://", 1)[1] if "://" in url else url
    slash = rest.find("/")
    return rest[slash:] if slash >= 0 else "/"


def rules(found: Iterable[tuple[query.EventHead, dict[str, Any]]], flavour: str) -> Iterator[str]:
    yield f"# MISP export of IDS rules ({flavour}) by fedmisp\n"
    sid = SID_BASE
    for head, a in found:
        if a["type"] not in TYPES:
            continue
        line = rule(a, head, sid, flavour)
        if line is not None:
            sid += 1
            yield line + "\n"
