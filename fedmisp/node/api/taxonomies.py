"""MISP's reference vocabularies through the REST API, read-only: taxonomies/* (pytaxonomies),
warninglists/* (pymispwarninglists) and tags/search, which answers each tag with its taxonomy.

The vocabularies are the installed packages' (model/taxonomies.py, correlate/warninglists.py), each
loaded once per process on first use. A taxonomy's or warninglist's id is the 56-bit id of its name
(`render.name_id`, as a tag's: decision 0025), the same on every node and across package upgrades.
Every taxonomy and warninglist is enabled: the node keeps no per-vocabulary state, so MISP's
enable, disable and update calls are refused (403) and say so, never answered as done.

warninglists/checkValue judges each value as restSearch's enforceWarninglist judges a held one
(export/filters.py: the value normalised as the type its shape says, `DNS.GOOGLE` as `dns.google`).
"""
from __future__ import annotations

import json
from typing import Any, Callable, Iterator

from aiohttp import web

from fedmisp.correlate.warninglists import warninglists
from fedmisp.export import filters
from fedmisp.model import taxonomies as tx
from fedmisp.node.api.access import READ_ONLY, MispRoutes
from fedmisp.node.api.helpers import CTX, JSON, ApiContext, ApiError, body_json, path_ref, run, stream, unwrap
from fedmisp.node.api.params import FALSE, MAX_TERMS, TRUE
from fedmisp.node.api.render import known_tags, name_id, tag_id, tag_json

routes = MispRoutes()

# Values one checkValue request may ask about, as sightings/add's targets: each is looked up in
# every warninglist (about 120), in a worker thread.
MAX_CHECKED_VALUES = 10_000
# MISP's default warninglists are of its `false_positive` category; pymispwarninglists' lists name none.
WARNINGLIST_CATEGORY = "false_positive"


# --- taxonomies -----------------------------------------------------------------------------------

def taxonomy_json(taxonomy: Any) -> dict[str, Any]:
    """A taxonomy as MISP's taxonomies table row shows it."""
    return {"id": name_id(taxonomy.name), "namespace": taxonomy.name, "description": taxonomy.description,
            "version": str(taxonomy.version), "enabled": True, "exclusive": bool(taxonomy.exclusive),
            "required": False, "highlighted": bool(taxonomy.taxonomy.get("highlighted"))}


def predicate_json(taxonomy: Any, predicate: Any) -> dict[str, Any]:
    return {"id": name_id(taxonomy.make_machinetag(predicate.predicate)),
            "taxonomy_id": name_id(taxonomy.name), "value": predicate.predicate, "expanded": predicate.expanded,
            "colour": predicate.colour, "description": predicate.description,
            "exclusive": bool(predicate.exclusive), "numerical_value": predicate.numerical_value}


def entry_json(taxonomy: Any, predicate: Any, entry: Any) -> dict[str, Any]:
    """A predicate's value; its id is the id of its tag (tags/index numbers that tag alike)."""
    return {"id": tag_id(taxonomy.make_machinetag(predicate.predicate, entry)),
            "taxonomy_predicate_id": name_id(taxonomy.make_machinetag(predicate.predicate)),
            "value": entry.value, "expanded": entry.expanded, "colour": entry.colour,
            "description": entry.description, "numerical_value": entry.numerical_value}


def _entry_view(machine_tag: tx.MachineTag, held: dict[str, tuple[str, dict[str, Any]]]) -> dict[str, Any]:
    """One of a taxonomy's tags as MISP's taxonomies/view lists it (Taxonomy::getTaxonomy)."""
    predicate, entry = machine_tag.predicate, machine_tag.entry
    shown = predicate.expanded or predicate.predicate
    out: dict[str, Any] = {"tag": machine_tag.tag}
    if entry is not None:
        out["expanded"] = f"{shown}: {entry.expanded or entry.value}"
        out["exclusive_predicate"] = bool(predicate.exclusive)
        described, colour, number = entry.description, entry.colour, entry.numerical_value
    else:
        out["expanded"] = shown
        described, colour, number = predicate.description, predicate.colour, predicate.numerical_value
    if described:
        out["description"] = described
    if colour:
        out["colour"] = colour
    if number is not None:
        out["numerical_value"] = number
    found = held.get(machine_tag.tag.lower())
    out["existing_tag"] = {"Tag": tag_json(*found)} if found is not None else False
    return out


def _held_by_lower_name(ctx: ApiContext) -> dict[str, tuple[str, dict[str, Any]]]:
    """The tags this node knows, by lower-cased name (MISP matches a taxonomy's tags so)."""
    return {name.lower(): (name, settings) for name, settings in known_tags(ctx).items()}


def _index(ctx: ApiContext) -> list[dict[str, Any]]:
    held = _held_by_lower_name(ctx)
    shown = {lower for lower, (_name, settings) in held.items() if not settings.get("hide_tag")}
    out = []
    for taxonomy in tx.taxonomies():
        tags = [m.tag.lower() for m in tx.machine_tags(taxonomy)]
        out.append({"Taxonomy": taxonomy_json(taxonomy), "total_count": len(tags),
                    "current_count": sum(1 for t in tags if t in shown)})
    return out


def find_taxonomy(ref: str) -> Any:
    """A taxonomy by id or namespace (MISP's taxonomies/view takes both); 404 if none."""
    ref = ref.strip()
    found = next((t for t in tx.taxonomies() if name_id(t.name) == ref), None) if ref.isdigit() \
        else tx.find_taxonomy(ref)
    if found is None:
        raise ApiError(404, f"Taxonomy not found: no taxonomy {ref[:100]!r} on this node; give its id "
                       "(taxonomies/index) or its namespace such as tlp", {"id": ["no such taxonomy"]},
                       "Taxonomy not found.")
    return found


def _view(ctx: ApiContext, ref: str) -> dict[str, Any]:
    taxonomy = find_taxonomy(ref)
    held = _held_by_lower_name(ctx)
    return {"Taxonomy": taxonomy_json(taxonomy), "entries": [_entry_view(m, held) for m in tx.machine_tags(taxonomy)]}


@routes.get("/taxonomies/index", READ_ONLY)
async def taxonomy_index(request: web.Request) -> web.Response:
    """PyMISP `taxonomies()`: `[{"Taxonomy", "total_count", "current_count"}]` (current: the
    taxonomy's tags this node knows and does not hide)."""
    return web.json_response(await run(_index, request.app[CTX]))


@routes.get("/taxonomies/view/{ref}", READ_ONLY)
async def taxonomy_view(request: web.Request) -> web.Response:
    """PyMISP `get_taxonomy(id or namespace)`: `{"Taxonomy", "entries"}`, each entry with
    `existing_tag` (the tag as tags/view shows it, or false)."""
    return web.json_response(await run(_view, request.app[CTX], path_ref(request)))


# --- warninglists ---------------------------------------------------------------------------------

def warninglist_json(warninglist: Any) -> dict[str, Any]:
    """A warninglist as MISP's warninglists table row shows it."""
    return {"id": name_id(warninglist.name), "name": warninglist.name, "type": warninglist.type,
            "description": warninglist.description, "version": str(warninglist.version), "enabled": True,
            "default": True, "category": WARNINGLIST_CATEGORY}


def _matching_attributes(warninglist: Any) -> list[str]:
    return list(getattr(warninglist, "matching_attributes", None) or ["ALL"])


def _warninglist_index() -> list[dict[str, Any]]:
    return [{"Warninglist": {**warninglist_json(w), "warninglist_entry_count": str(len(w.list)),
                             "valid_attributes": ", ".join(_matching_attributes(w))}}
            for _name, w in sorted(warninglists().items())]


def _find_warninglist(ref: str) -> Any:
    """A warninglist by id (MISP's warninglists/view takes only its id); 404 if none."""
    found = next((w for w in warninglists().values() if name_id(w.name) == ref), None) if ref.isdigit() else None
    if found is None:
        raise ApiError(404, f"Warninglist not found: no warninglist with id {ref[:100]!r} on this node; "
                       "expected an id from warninglists/index", {"id": ["no such warninglist"]},
                       "Warninglist not found.")
    return found


def _warninglist_view(warninglist: Any) -> Iterator[str]:
    """`{"Warninglist": {…, "WarninglistEntry": […], "WarninglistType": […]}}` in pieces: a list
    may hold a million entries (the top-sites lists). An entry's id is its place in the list."""
    wid = name_id(warninglist.name)
    yield '{"Warninglist": ' + json.dumps(warninglist_json(warninglist))[:-1] + ', "WarninglistEntry": ['
    for i, value in enumerate(warninglist.list, 1):
        yield ("," if i > 1 else "") + json.dumps({"id": str(i), "value": str(value), "warninglist_id": wid,
                                                    "comment": None})
    kinds = [{"id": str(i), "type": kind, "warninglist_id": wid}
             for i, kind in enumerate(_matching_attributes(warninglist), 1)]
    yield '], "WarninglistType": ' + json.dumps(kinds) + "}}"


@routes.get("/warninglists/index", READ_ONLY)
async def warninglist_index(request: web.Request) -> web.Response:
    """PyMISP `warninglists()`: `{"Warninglists": [{"Warninglist": …}]}`."""
    return web.json_response({"Warninglists": await run(_warninglist_index)})


@routes.get("/warninglists/view/{ref}", READ_ONLY)
async def warninglist_view(request: web.Request) -> web.StreamResponse:
    """PyMISP `get_warninglist(id)`, streamed."""
    warninglist = await run(_find_warninglist, path_ref(request).strip())
    return await stream(request, _warninglist_view(warninglist), JSON)


def checked_values(document: Any) -> list[str]:
    """The values a checkValue body asks about, read as MISP reads them: a list, one string, or
    either inside `{"Warninglist": …}` or `{"[]": …}` (a form's encoding); an object's values.
    400 naming the place of a value that is not a string, or for no value at all."""
    data, place = document, ""
    if isinstance(data, dict) and "Warninglist" in data:
        data, place = data["Warninglist"], "Warninglist"
    if isinstance(data, dict) and "[]" in data:
        data, place = data["[]"], f"{place}.[]" if place else "[]"
    if isinstance(data, dict):
        items = [(f"{place}.{key}" if place else str(key), value) for key, value in data.items()]
    elif isinstance(data, list):
        items = [(f"{place or 'body'}[{i}]", value) for i, value in enumerate(data)]
    else:
        items = [(place or "body", data)]
    if not items:
        raise ApiError(400, "No valid data received: expected a list of values such as [\"8.8.8.8\"]",
                       {"body": ["expected a list of values to check, such as [\"8.8.8.8\", \"example.com\"]"]},
                       "Invalid values")
    if len(items) > MAX_CHECKED_VALUES:
        raise ApiError(400, f"{len(items)} values; at most {MAX_CHECKED_VALUES} are accepted in one request",
                       {"body": [f"expected at most {MAX_CHECKED_VALUES} values"]}, "Invalid values")
    for where, value in items:
        if not isinstance(value, str):
            shown = repr(value)
            shown = shown if len(shown) <= 60 else shown[:57] + "..."
            raise ApiError(400, f"{where}: {shown}; expected a value to check, as a string such as \"8.8.8.8\"",
                           {where: ["expected a string such as \"8.8.8.8\""]}, "Invalid values")
    return [value for _where, value in items]


def check_values(values: list[str]) -> dict[str, list[dict[str, str]]]:
    """MISP's checkValue answer: for each value (trimmed, as sent) some list holds, the lists that
    hold it and the form that was looked up (`matched`); values no list holds are left out."""
    hits: dict[str, list[dict[str, str]]] = {}
    for value in values:
        value = value.strip()
        attribute = filters.bare_attribute(value)
        names = filters.warninglists(attribute)
        if names:
            matched = filters.judged_value(attribute)
            hits[value] = [{"id": name_id(name), "name": name, "matched": matched} for name in names]
    return hits


@routes.post("/warninglists/checkValue", READ_ONLY)
async def warninglist_check_value(request: web.Request) -> web.Response:
    """PyMISP `values_in_warninglist(values)`: `{value: [{"id", "name", "matched"}]}`."""
    values = checked_values(await body_json(request))
    return web.json_response(await run(check_values, values))


# --- enable, disable, update: not served ----------------------------------------------------------

_FIXED = {
    "taxonomies": "this node serves the taxonomies of its installed pytaxonomies package, every one enabled "
                  "and none editable: taxonomies are not enabled, disabled, made required or updated here "
                  "(a newer pytaxonomies updates them; docs/api.md)",
    "warninglists": "this node serves the warninglists of its installed pymispwarninglists package, every one "
                    "enabled: warninglists are not enabled, disabled or updated here (a newer "
                    "pymispwarninglists updates them; docs/api.md)",
}


@routes.post("/taxonomies/enable/{ref}", READ_ONLY)
@routes.post("/taxonomies/disable/{ref}", READ_ONLY)
@routes.post("/taxonomies/toggleRequired/{ref}", READ_ONLY)
@routes.post("/taxonomies/addTag{tail:(/.*)?}", READ_ONLY)
@routes.post("/taxonomies/disableTag{tail:(/.*)?}", READ_ONLY)
@routes.post("/taxonomies/update", READ_ONLY)
@routes.post("/warninglists/toggleEnable", READ_ONLY)
@routes.post("/warninglists/update", READ_ONLY)
async def vocabulary_fixed(request: web.Request) -> web.Response:
    """MISP's calls that change a taxonomy or warninglist (PyMISP `enable_taxonomy`,
    `disable_taxonomy`, `enable_taxonomy_tags`, `set_taxonomy_required`, `update_taxonomies`,
    `toggle_warninglist`, `enable_warninglist`, `disable_warninglist`, `update_warninglists`):
    refused, as nothing here can change. Any key may hear that: it changes nothing."""
    controller = request.path.strip("/").split("/", 1)[0]
    raise ApiError(403, f"{request.path}: {_FIXED[controller]}", {controller: ["read-only on this node"]},
                   "Not changed")


# --- tags/search ----------------------------------------------------------------------------------

_ANY, _ONE = object(), object()  # LIKE's % and _


def like(pattern: str) -> Callable[[str], bool]:
    """MySQL's LIKE without case, as MISP's tag search runs it: `%` any run of characters, `_` one
    character, a backslash makes the next character literal. Matched in time proportional to the
    pattern's length times the name's (a regular expression of many `%` could backtrack for ever)."""
    tokens: list[Any] = []
    escaped = False
    for ch in pattern:
        if escaped or ch not in "%_\\":
            tokens.extend(ch.lower())
            escaped = False
        elif ch == "\\":
            escaped = True
        elif ch == "%":
            if not tokens or tokens[-1] is not _ANY:
                tokens.append(_ANY)
        else:
            tokens.append(_ONE)
    if escaped:
        tokens.append("\\")

    def matches(name: str) -> bool:
        text = name.lower()
        p = i = 0
        star, resume = -1, 0  # the last % seen, and where in the text its run ends so far
        while i < len(text):
            if p < len(tokens) and (tokens[p] is _ONE or tokens[p] == text[i]):
                p, i = p + 1, i + 1
            elif p < len(tokens) and tokens[p] is _ANY:
                star, resume, p = p, i, p + 1
            elif star >= 0:  # let the last % take one more character
                resume += 1
                p, i = star + 1, resume
            else:
                return False
        return all(t is _ANY for t in tokens[p:])
    return matches


def _terms(value: Any, where: str) -> list[str]:
    values = value if isinstance(value, list) else [value]
    if not values or not all(isinstance(v, str) and v for v in values):
        raise ApiError(400, f"{where}: expected a tag name or a pattern (% for any text) such as tlp:%, or a list "
                       "of them", {where: ["expected a tag name or pattern such as \"tlp:%\", or a list of them"]},
                       "Invalid search")
    if len(values) > MAX_TERMS:
        raise ApiError(400, f"{where}: {len(values)} names; at most {MAX_TERMS} are accepted",
                       {where: [f"expected at most {MAX_TERMS} names or patterns"]}, "Invalid search")
    return values


def _posted_search(document: Any) -> list[str]:
    """The names a posted tags/search asks for: PyMISP's `{"tagname": …, "strict_tagname": …}`,
    MISP's `{"tag": …}` (bare or in `Tag`), or a name or list of them."""
    data = unwrap(document, "Tag")
    if isinstance(data, dict):
        for key in ("tagname", "tag"):
            if key in data:
                return _terms(data[key], key)
        raise ApiError(400, "expected {\"tagname\": a tag name or pattern such as \"tlp:%\"}",
                       {"tagname": ["missing; expected a tag name or pattern such as \"tlp:%\""]}, "Invalid search")
    return _terms(data, "body")


def tag_search_hit(name: str, settings: dict[str, Any]) -> dict[str, Any]:
    """A found tag as MISP's tags/search answers it: with its taxonomy and the predicate (and the
    value, for a namespace:predicate="value" tag) when a taxonomy applies."""
    out: dict[str, Any] = {"Tag": tag_json(name, settings)}
    found = tx.tag_taxonomy(name)
    if found is not None:
        taxonomy, predicate, entry = found
        out["Taxonomy"] = taxonomy_json(taxonomy)
        out["TaxonomyPredicate"] = predicate_json(taxonomy, predicate)
        if tx.split_tag(name).value is not None:
            out["TaxonomyPredicate"]["TaxonomyEntry"] = [] if entry is None else [entry_json(taxonomy, predicate, entry)]
    return out


def search_tags(ctx: ApiContext, terms: list[str], strict: bool) -> list[dict[str, Any]]:
    """The tags this node knows that a term names: strict, a tag's exact name (without case) or
    its id; else a LIKE pattern on the name."""
    if strict:
        wanted = {t.lower() for t in terms}
        ids = {t for t in terms if t.isdigit()}

        def matches(name: str) -> bool:
            return name.lower() in wanted or tag_id(name) in ids
    else:
        patterns = [like(t) for t in terms]

        def matches(name: str) -> bool:
            return any(p(name) for p in patterns)
    return [tag_search_hit(name, settings) for name, settings in known_tags(ctx).items() if matches(name)]


@routes.post("/tags/search", READ_ONLY)
async def tag_search(request: web.Request) -> web.Response:
    """PyMISP `search_tags(name, strict_tagname)`: the name is a pattern (`%` any text), matched
    without case, as MISP reads that call. `strict_tagname` only skips galaxy clusters there,
    and this node holds none."""
    terms = _posted_search(await body_json(request))
    return web.json_response(await run(search_tags, request.app[CTX], terms, False))


@routes.get("/tags/search/{tag}", READ_ONLY)
@routes.post("/tags/search/{tag}", READ_ONLY)
@routes.get("/tags/search/{tag}/{strict}", READ_ONLY)
@routes.post("/tags/search/{tag}/{strict}", READ_ONLY)
async def tag_search_named(request: web.Request) -> web.Response:
    """MISP's tags/search/<name>[/<strict>]: a pattern, or with strict 1 an exact name or an id."""
    strict = path_ref(request, "strict") if "strict" in request.match_info else "0"
    tag = request.match_info["tag"] if "strict" in request.match_info else path_ref(request, "tag")
    if strict not in (*TRUE, *FALSE):
        raise ApiError(400, f"strict: {strict[:60]!r}; expected 0 or 1", {"strict": ["expected 0 or 1 (or true/false)"]},
                       "Invalid search")
    terms = _terms(tag, "tag")
    return web.json_response(await run(search_tags, request.app[CTX], terms, strict in TRUE))
