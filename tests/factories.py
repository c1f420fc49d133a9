"""Small MISP events for tests, valid for their types unless a test breaks them on purpose."""
from __future__ import annotations

import random
import uuid
from typing import Any

ORG = {"name": "Example CERT", "uuid": "11111111-2222-4333-8444-555555555555"}


def _u(rng: random.Random) -> str:
    return str(uuid.UUID(int=rng.getrandbits(128), version=4))


def attribute(rng: random.Random, i: int) -> dict[str, Any]:
    kind = i % 5
    if kind == 0:
        t, c, v = "ip-dst", "Network activity", f"198.51.{rng.randrange(256)}.{rng.randrange(256)}"
    elif kind == 1:
        t, c, v = "domain", "Network activity", f"host{rng.randrange(10**6)}.example"
    elif kind == 2:
        t, c, v = "md5", "Payload delivery", f"{rng.getrandbits(128):032x}"
    elif kind == 3:
        t, c, v = "url", "Network activity", f"https://x{rng.randrange(10**6)}.example/p?q={i}"
    else:
        t, c, v = "text", "Other", f"note {i} {rng.random()}"
    a = {"uuid": _u(rng), "type": t, "category": c, "value": v, "to_ids": kind != 4,
         "timestamp": str(1_700_000_000 + i), "distribution": str(rng.choice([0, 1, 2, 3, 5]))}
    if i % 7 == 0:
        a["Tag"] = [{"name": "tlp:green"}]
    return a


def event(seed: int = 0, attributes: int = 10, objects: int = 1, timestamp: int = 1_700_000_500) -> dict[str, Any]:
    rng = random.Random(seed)
    e: dict[str, Any] = {
        "uuid": _u(rng), "info": f"test event {seed}", "date": "2024-01-02", "threat_level_id": "2",
        "analysis": "1", "distribution": "3", "published": True, "timestamp": str(timestamp),
        "publish_timestamp": str(timestamp), "Orgc": ORG, "Tag": [{"name": "tlp:amber"}],
        "Attribute": [attribute(rng, i) for i in range(attributes)], "Object": [],
    }
    for j in range(objects):
        target = e["Attribute"][0]["uuid"] if attributes else _u(rng)
        e["Object"].append({
            "uuid": _u(rng), "name": "domain-ip", "meta-category": "network",
            "template_uuid": "43b3b146-77eb-4931-b4cc-b66c60f28734", "template_version": "11",
            "timestamp": str(timestamp), "distribution": "5",
            "Attribute": [
                {"uuid": _u(rng), "type": "domain", "category": "Network activity", "object_relation": "domain",
                 "value": f"obj{j}.example", "to_ids": True, "timestamp": str(timestamp)},
                {"uuid": _u(rng), "type": "ip-dst", "category": "Network activity", "object_relation": "ip",
                 "value": f"203.0.113.{j % 256}", "to_ids": True, "timestamp": str(timestamp)},
            ],
            "ObjectReference": [{"uuid": _u(rng), "referenced_uuid": target, "relationship_type": "related-to",
                                 "timestamp": str(timestamp)}],
        })
    return {"Event": e}
