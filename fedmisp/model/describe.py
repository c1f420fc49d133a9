"""The MISP format's own definitions, read from the files pymisp ships.

describeTypes.json (types, categories, category/type pairs, sane defaults) and the misp-objects
templates are the field's reference; fedmisp reads them from the installed pymisp package instead of
keeping hand-copied lists that would drift from MISP.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cache
from importlib.util import find_spec
from pathlib import Path
from typing import Any


def pymisp_data() -> Path:
    """pymisp's data folder, found without importing pymisp (its package import pulls in requests
    and more: a fifth of a second in every CLI command and import worker)."""
    spec = find_spec("pymisp")
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError("pymisp is not installed; fedmisp reads describeTypes.json and the "
                                  "object templates from it")
    return Path(next(iter(spec.submodule_search_locations))) / "data"


@dataclass(frozen=True, slots=True)
class TypeDefaults:
    default_category: str
    to_ids: bool


@dataclass(frozen=True, slots=True)
class DescribeTypes:
    types: frozenset[str]
    categories: tuple[str, ...]
    # category -> the types MISP allows in it
    category_types: dict[str, frozenset[str]]
    sane_defaults: dict[str, TypeDefaults]
    raw: dict[str, Any]  # the file's "result" object, served as-is by the API

    def categories_for(self, type_: str) -> list[str]:
        return [c for c in self.categories if type_ in self.category_types[c]]


@cache
def describe_types() -> DescribeTypes:
    raw = json.loads((pymisp_data() / "describeTypes.json").read_text("utf-8"))["result"]
    return DescribeTypes(
        types=frozenset(raw["types"]),
        categories=tuple(raw["categories"]),
        category_types={c: frozenset(t) for c, t in raw["category_type_mappings"].items()},
        sane_defaults={
            t: TypeDefaults(d["default_category"], bool(int(d["to_ids"])))
            for t, d in raw["sane_defaults"].items()
        },
        raw=raw,
    )


@dataclass(frozen=True, slots=True)
class TemplateRelation:
    name: str
    misp_attribute: str
    categories: tuple[str, ...]
    multiple: bool


@dataclass(frozen=True, slots=True)
class ObjectTemplate:
    name: str
    uuid: str
    version: int
    meta_category: str
    required: tuple[str, ...]
    required_one_of: tuple[str, ...]
    relations: dict[str, TemplateRelation]


def _template_from(definition: dict[str, Any]) -> ObjectTemplate:
    relations = {
        name: TemplateRelation(
            name=name,
            misp_attribute=a["misp-attribute"],
            categories=tuple(a.get("categories", ())),
            multiple=bool(a.get("multiple", False)),
        )
        for name, a in definition["attributes"].items()
    }
    return ObjectTemplate(
        name=definition["name"],
        uuid=definition["uuid"],
        version=int(definition["version"]),
        meta_category=definition["meta-category"],
        required=tuple(definition.get("required", ())),
        required_one_of=tuple(definition.get("requiredOneOf", ())),
        relations=relations,
    )


@cache
def object_templates() -> dict[str, ObjectTemplate]:
    """Templates by name and by uuid (both keys point at the same template)."""
    out: dict[str, ObjectTemplate] = {}
    root = pymisp_data() / "misp-objects" / "objects"
    for folder in root.iterdir():
        definition = folder / "definition.json"
        if not definition.is_file():
            continue
        template = _template_from(json.loads(definition.read_text("utf-8")))
        out[template.name] = template
        out[template.uuid] = template
    return out


def find_template(name: str, template_uuid: str | None) -> ObjectTemplate | None:
    templates = object_templates()
    if template_uuid and template_uuid in templates:
        return templates[template_uuid]
    return templates.get(name)
