"""Filters and peer modes from their TOML form, with errors that name the field and what is accepted.

Pure: receives the parsed TOML tables and a label for where they came from (file and peer);
node/config.py reads the file and assembles peers.
"""
from __future__ import annotations

from dataclasses import fields
from typing import Any

from fedmisp.policy.model import PAP_ORDER, SHARING_GROUP, TLP_ORDER, PeerMode, SyncFilter

_LIST_FIELDS = ("tags_include", "tags_exclude", "orgs_include", "orgs_exclude", "types_exclude",
                "templates_exclude")
FILTER_FIELDS = tuple(f.name for f in fields(SyncFilter))
MAX_FILTER_ENTRIES = 10_000  # per list: a filter is a policy, not a data set


def parse_mode(value: Any, where: str, problems: list[str]) -> PeerMode:
    try:
        return PeerMode(value)
    except ValueError:
        problems.append(f"{where}.mode: {value!r} is not a peer mode; accepted: "
                        + ", ".join(m.value for m in PeerMode))
        return PeerMode.FULL


def parse_filter(table: Any, where: str, problems: list[str], *, push: bool) -> SyncFilter:
    """A [peer.push] or [peer.pull] table; unknown keys and bad values are reported, not guessed."""
    default = SyncFilter.push_default() if push else SyncFilter()
    if table is None:
        return default
    if not isinstance(table, dict):
        problems.append(f"{where}: expected a table of filter settings")
        return default
    values: dict[str, Any] = {}
    for key, value in table.items():
        field_where = f"{where}.{key}"
        if key not in FILTER_FIELDS:
            problems.append(f"{field_where}: unknown filter setting; accepted: {', '.join(FILTER_FIELDS)}")
        elif key in _LIST_FIELDS:
            if not isinstance(value, list) or not all(isinstance(v, str) and v.strip() for v in value):
                problems.append(f"{field_where}: expected a list of non-empty strings, such as [\"tlp:red\", \"osint:*\"]")
            elif len(value) > MAX_FILTER_ENTRIES:
                problems.append(f"{field_where}: {len(value)} entries; at most {MAX_FILTER_ENTRIES} accepted")
            else:
                values[key] = tuple(v.strip() for v in value)
        elif key in ("tlp_ceiling", "pap_ceiling"):
            order = TLP_ORDER if key == "tlp_ceiling" else PAP_ORDER
            name = value.lower() if isinstance(value, str) else value
            if isinstance(name, str) and not name.startswith(("tlp:", "pap:")):
                name = ("tlp:" if key == "tlp_ceiling" else "pap:") + name
            if name in ("tlp:none", "pap:none"):  # "none", with the prefix added above
                values[key] = None
            elif name not in order:
                problems.append(f"{field_where}: {value!r} is not a level; accepted: {', '.join(order)} or \"none\"")
            else:
                values[key] = name
        elif key == "to_ids_only":
            if not isinstance(value, bool):
                problems.append(f"{field_where}: expected true or false")
            else:
                values[key] = value
        elif key == "max_distribution":
            if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= SHARING_GROUP:
                problems.append(f"{field_where}: {value!r}; expected 0, 1, 2, 3 or 4 (4 lets sharing groups pass)")
            else:
                values[key] = value
        elif key == "not_before":
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                problems.append(f"{field_where}: {value!r}; expected a Unix timestamp (seconds)")
            else:
                values[key] = value
    return SyncFilter(**{**{f: getattr(default, f) for f in FILTER_FIELDS}, **values})
