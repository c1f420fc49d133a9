"""Custom MISP object templates: the definitions an organisation publishes as signed records.

A published template is a misp-objects `definition.json` (name, uuid, version, description,
meta-category, attributes with their misp-attribute type, categories and flags, required,
requiredOneOf), carried as the body of a KIND_TEMPLATE record signed by the publishing node. The
shape is the one misp-objects' own schema (`schema_objects.json`, shipped with pymisp) describes;
this module checks it field by field so an error names the field, and adds what the schema cannot
say: each type is a describeTypes type, each category is valid for its type, a required relation
exists, and the template is no shipped one under another author (decision 0030).

Who may publish which version is policy/templates.py's; how an object is checked against its
template is model/misp.py's (`resolve_template` below says which template an object names).
"""
from __future__ import annotations

import json
import re
from functools import cache
from typing import Any, Mapping

from fedmisp.model.describe import ObjectTemplate, _template_from, describe_types, object_templates, pymisp_data

# A template's text fields; misp-objects' own are far shorter (the longest description is ~600).
MAX_TEMPLATE_TEXT = 4096
# Relations of one template: the largest shipped template (file) has under 60.
MAX_RELATIONS = 1000
# Entries of a values_list or sane_default (MISP stores them as one JSON text column).
MAX_VALUES = 1000
MAX_VERSION = 2 ** 31 - 1  # MISP's object_templates.version is an INT column
_UUID_RE = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")


class TemplateError(ValueError):
    """A template definition that does not validate; the message names the field."""


@cache
def _schema() -> dict[str, Any]:
    return json.loads((pymisp_data() / "misp-objects" / "schema_objects.json").read_text("utf-8"))


def meta_categories() -> tuple[str, ...]:
    return tuple(_schema()["properties"]["meta-category"]["enum"])


def _show(value: Any) -> str:
    text = json.dumps(value) if isinstance(value, (str, int, float, bool, type(None))) else type(value).__name__
    return text if len(text) <= 60 else text[:57] + "..."


def _text(definition: dict[str, Any], key: str, where: str = "template") -> str:
    value = definition.get(key)
    if not isinstance(value, str) or not value.strip():
        raise TemplateError(f"{where}.{key}: {_show(value)} is not a non-empty string")
    if len(value) > MAX_TEMPLATE_TEXT:
        raise TemplateError(f"{where}.{key}: {len(value)} characters; at most {MAX_TEMPLATE_TEXT}")
    return value


def _strings(value: Any, where: str, *, limit: int = MAX_VALUES) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise TemplateError(f"{where}: expected a list of strings, got {_show(value)}")
    if len(value) > limit:
        raise TemplateError(f"{where}: {len(value)} entries; at most {limit}")
    if len(set(value)) != len(value):
        raise TemplateError(f"{where}: lists an entry twice")
    return value


def _attribute(relation: str, spec: Any) -> None:
    where = f"template.attributes.{relation}"
    if not isinstance(spec, dict):
        raise TemplateError(f"{where}: expected a map with misp-attribute, ui-priority and description")
    schema = _schema()["defs"]["attribute"]
    for key in spec:
        if key not in schema["properties"]:
            raise TemplateError(f"{where}.{key}: not a field of a misp-objects attribute; accepted: "
                                + ", ".join(sorted(schema["properties"])))
    for key in schema["required"]:
        if key not in spec:
            raise TemplateError(f"{where}.{key}: missing")
    types = describe_types()
    type_ = spec["misp-attribute"]
    if not isinstance(type_, str) or type_ not in types.types:
        raise TemplateError(f"{where}.misp-attribute: {_show(type_)} is not a MISP attribute type "
                            "(pymisp's describeTypes.json lists them)")
    priority = spec["ui-priority"]
    if isinstance(priority, bool) or not isinstance(priority, (int, float)):
        raise TemplateError(f"{where}.ui-priority: {_show(priority)} is not a number")
    if not isinstance(spec["description"], str) or len(spec["description"]) > MAX_TEMPLATE_TEXT:
        raise TemplateError(f"{where}.description: expected a string of at most {MAX_TEMPLATE_TEXT} characters")
    for key in ("multiple", "disable_correlation", "to_ids", "recommended"):
        if key in spec and not isinstance(spec[key], bool):
            raise TemplateError(f"{where}.{key}: {_show(spec[key])} is not true or false")
    if "categories" in spec:
        allowed = types.categories_for(type_)
        for category in _strings(spec["categories"], f"{where}.categories"):
            if category not in allowed:
                raise TemplateError(f"{where}.categories: {_show(category)} is not a category of type {type_}; "
                                    f"accepted: {', '.join(allowed)}")
    for key in ("sane_default", "values_list"):
        if key in spec:
            _strings(spec[key], f"{where}.{key}")


def as_published(definition: Any) -> Any:
    """A definition as this node signs it: a `version` written as decimal text ("1", as pymisp's
    own test template and some community templates write it; MISP reads it as a number) becomes
    that integer, and an attribute without `ui-priority` (which only orders MISP's form; pymisp's
    test template leaves it out) gets 0, so every node reads the signed body as the schema says."""
    if not isinstance(definition, dict):
        return definition
    out = dict(definition)
    version = out.get("version")
    if isinstance(version, str) and version.isascii() and version.isdigit() and len(version) <= 10:
        out["version"] = int(version)
    attributes = out.get("attributes")
    if isinstance(attributes, dict):
        out["attributes"] = {relation: ({**spec, "ui-priority": 0} if isinstance(spec, dict) and "ui-priority" not in spec
                                        else spec) for relation, spec in attributes.items()}
    return out


def validate_definition(definition: Any) -> ObjectTemplate:
    """The template a definition describes, or TemplateError naming the first field that is wrong.
    (A shipped template's name or uuid is refused by `check_not_shipped`, not here: a received
    shipped definition is not a shape problem.)"""
    if not isinstance(definition, dict):
        raise TemplateError("template: expected a map (a misp-objects definition.json)")
    schema = _schema()
    for key in definition:
        if key not in schema["properties"]:
            raise TemplateError(f"template.{key}: not a field of a misp-objects definition; accepted: "
                                + ", ".join(sorted(schema["properties"])))
    for key in schema["required"]:
        if key not in definition:
            raise TemplateError(f"template.{key}: missing")
    _text(definition, "name")
    uuid = definition["uuid"]
    if not isinstance(uuid, str) or not _UUID_RE.match(uuid):
        raise TemplateError(f"template.uuid: {_show(uuid)} is not a lower-case UUID")
    version = definition["version"]
    if isinstance(version, bool) or not isinstance(version, int) or not 1 <= version <= MAX_VERSION:
        raise TemplateError(f"template.version: {_show(version)} is not an integer 1 to {MAX_VERSION}")
    _text(definition, "description")
    if definition["meta-category"] not in meta_categories():
        raise TemplateError(f"template.meta-category: {_show(definition['meta-category'])} is not a meta-category; "
                            f"accepted: {', '.join(meta_categories())}")
    attributes = definition["attributes"]
    if not isinstance(attributes, dict) or not attributes:
        raise TemplateError("template.attributes: expected a non-empty map of relation -> attribute")
    if len(attributes) > MAX_RELATIONS:
        raise TemplateError(f"template.attributes: {len(attributes)} relations; at most {MAX_RELATIONS}")
    for relation, spec in attributes.items():
        if not relation.strip() or len(relation) > 255:
            raise TemplateError(f"template.attributes: relation {_show(relation)} is not a name of 1 to 255 characters")
        _attribute(relation, spec)
    for key in ("required", "requiredOneOf"):
        if key in definition:
            for relation in _strings(definition[key], f"template.{key}", limit=MAX_RELATIONS):
                if relation not in attributes:
                    raise TemplateError(f"template.{key}: {_show(relation)} is not a relation of template.attributes")
    return _template_from(definition)


def check_not_shipped(template: ObjectTemplate) -> None:
    """A published template cannot take a shipped template's uuid or name: an object naming it
    would validate differently on nodes that hold the publication and on nodes that do not."""
    shipped = object_templates()
    if template.uuid in shipped:
        raise TemplateError(f"template.uuid: {template.uuid} is the shipped misp-objects template "
                            f"'{shipped[template.uuid].name}'; a published template needs a uuid of its own")
    if template.name in shipped:
        raise TemplateError(f"template.name: '{template.name}' is a shipped misp-objects template "
                            f"(uuid {shipped[template.name].uuid}); a published template needs a name of its own")


def template_problem(definition: Any) -> str | None:
    """What is wrong with a received template definition (None: nothing)."""
    try:
        check_not_shipped(validate_definition(definition))
    except TemplateError as e:
        return str(e)
    return None


def resolve_template(name: str, template_uuid: str | None, version: int | None,
                     published: Mapping[str, ObjectTemplate] | None) -> tuple[ObjectTemplate | None, str | None]:
    """The template an object names, and what is missing (None: nothing).

    By uuid: the shipped misp-objects template, else the published one this node holds (at the
    version the object names or a later one: a template version only adds what older objects
    need not carry, as misp-objects' do). An object naming a uuid this node holds neither way is
    missing its template. An object without a template uuid is checked against the shipped
    template of its name, if any (as before published templates)."""
    shipped = object_templates()
    if not template_uuid:
        return shipped.get(name), None
    found = shipped.get(template_uuid)
    if found is not None:
        return found, None
    found = (published or {}).get(template_uuid)
    if found is None:
        return None, (f"names object template {template_uuid} ('{name}'), which this node holds neither "
                      "as a shipped misp-objects template nor as a published one")
    if version is not None and version > found.version:
        return None, (f"names version {version} of object template {template_uuid} ('{found.name}'); "
                      f"this node holds version {found.version}")
    return found, None


@cache
def shipped_definitions() -> dict[str, dict[str, Any]]:
    """The shipped misp-objects definitions as their files say, by uuid (objectTemplates/* serves them)."""
    out: dict[str, dict[str, Any]] = {}
    for folder in sorted((pymisp_data() / "misp-objects" / "objects").iterdir()):
        path = folder / "definition.json"
        if path.is_file():
            definition = json.loads(path.read_text("utf-8"))
            out[definition["uuid"]] = definition
    return out
