"""What exports for protective tools leave out: attributes without the IDS flag (`to_ids`), and
values a MISP warninglist says are benign (MISP's enforceWarninglist: a public resolver, a top
domain), which would block or alert on everyone's traffic."""
from __future__ import annotations

from typing import Any, Iterable, Iterator, TypeVar

from fedmisp.correlate.warninglists import warninglist_hits
from fedmisp.model.values import ValueFormatError, normalise

T = TypeVar("T")


def indicator_parts(attribute: dict[str, Any]) -> list[str]:
    """The value as a sensor or a warninglist must see it: normalised (refanged, as
    hxxps://x[.]example -> https://x.example; lower-case domains and hashes) and split when
    composite (domain|ip -> [domain, ip]). The stored original is what MISP JSON keeps."""
    try:
        return list(normalise(attribute["type"], attribute["value"]))
    except ValueFormatError:  # (stored values were validated; a type no longer known keeps its text)
        return attribute["value"].split("|", 1)


def judged_value(attribute: dict[str, Any]) -> str:
    """The form of the attribute's value a warninglist is asked about: normalised, and the first
    part of a composite (domain|ip, filename|md5), as MISP judges one."""
    return indicator_parts(attribute)[0]


def warninglists(attribute: dict[str, Any]) -> list[str]:
    """The names of the warninglists the attribute's value is on. MISP checks the value as it stored
    it (lower-cased, a domain or URL as it validates them); the stored value here is the one the
    author wrote, so the check is on its normalised form: `DNS.GOOGLE` and `dns[.]google` are the
    `dns.google` a public-resolver list names. A composite (domain|ip, filename|md5) is judged by
    its first part, as MISP does."""
    return warninglist_hits(judged_value(attribute))


# The types a bare value (warninglists/checkValue) is tried as, in this order; the first whose
# normalisation takes it is its type. `url` takes nearly any text and only refangs and lower-cases
# a scheme and host, so it comes last; a value none takes is judged as sent (trimmed).
BARE_VALUE_TYPES = ("ip-dst", "domain", "email-src", "md5", "sha1", "sha224", "sha256", "sha384", "sha512", "url")


def bare_attribute(value: str) -> dict[str, Any]:
    """A value sent without a type, as the attribute it would be, so that `warninglists` judges it
    as it judges a held one (`8.8.8.8`, `DNS.GOOGLE`, `hxxps://dns[.]google/x`)."""
    for type_ in BARE_VALUE_TYPES:
        try:
            normalise(type_, value)
        except ValueFormatError:
            continue
        return {"type": type_, "value": value}
    return {"type": "text", "value": value}


def warninglisted(attribute: dict[str, Any]) -> bool:
    return bool(warninglists(attribute))


def keep(attribute: dict[str, Any], *, to_ids: bool, enforce_warninglist: bool) -> bool:
    if attribute.get("deleted"):
        return False
    if to_ids and not attribute.get("to_ids"):
        return False
    return not (enforce_warninglist and warninglisted(attribute))


def attributes(found: Iterable[tuple[T, dict[str, Any]]], *, to_ids: bool = False,
               enforce_warninglist: bool = False) -> Iterator[tuple[T, dict[str, Any]]]:
    """(event, attribute) pairs the filters keep."""
    for head, a in found:
        if keep(a, to_ids=to_ids, enforce_warninglist=enforce_warninglist):
            yield head, a


def event(misp_event: dict[str, Any], *, to_ids: bool = False, enforce_warninglist: bool = False) -> dict[str, Any]:
    """A MISP JSON event with only the attributes (in and out of objects) the filters keep, never
    soft-deleted ones; objects left with no attribute are dropped."""
    e = misp_event["Event"]
    e["Attribute"] = [a for a in e.get("Attribute", []) if keep(a, to_ids=to_ids, enforce_warninglist=enforce_warninglist)]
    objects = []
    for o in e.get("Object", []):
        if o.get("deleted"):
            continue
        o["Attribute"] = [a for a in o.get("Attribute", [])
                          if keep(a, to_ids=to_ids, enforce_warninglist=enforce_warninglist)]
        if o["Attribute"]:
            objects.append(o)
    kept = {o["uuid"] for o in objects} | {a["uuid"] for a in e["Attribute"]}
    for o in objects:
        o["ObjectReference"] = [r for r in o.get("ObjectReference", []) if r.get("referenced_uuid") in kept]
    e["Object"] = objects
    return misp_event
