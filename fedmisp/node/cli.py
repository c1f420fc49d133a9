"""The ``fedmisp`` command line."""
from __future__ import annotations

import argparse
import dataclasses
import json
import re
import sys
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, NoReturn

from fedmisp import __version__
from fedmisp.export.formats import FORMATS
from fedmisp.node.config import DEFAULT_LISTEN, LOG_FORMATS, LOG_LEVELS, ConfigError
from fedmisp.node.home import ROLES, SYNC_ROLE
from fedmisp.node.misp_config import KIND_MISP, KINDS, MISP_MODES


def _home(args: argparse.Namespace) -> Path:
    return Path(args.home).expanduser()


def cmd_init(args: argparse.Namespace) -> int:
    from fedmisp.node.home import init_home
    node, api_key = init_home(_home(args), args.org, args.listen, args.org_uuid)
    with node:
        print(f"Initialised node for {node.config.org_name!r} in {node.config.home}")
        print(f"  org uuid:    {node.config.org_uuid}")
        print(f"  public key:  {node.identity.public_key_text}")
        print(f"  listen:      {node.config.listen}")
        print(f"  admin API key (shown once, stored only as a hash): {api_key}")
    return 0


def _open(args: argparse.Namespace, readonly: bool = False) -> Any:
    from fedmisp.node.home import Node
    return Node.open(_home(args), readonly=readonly)


def cmd_info(args: argparse.Namespace) -> int:
    with _open(args) as node:
        info = {
            "org_name": node.config.org_name,
            "org_uuid": node.config.org_uuid,
            "public_key": node.identity.public_key_text,
            "listen": node.config.listen,
            "home": str(node.config.home),
        }
    if args.json:
        print(json.dumps(info, indent=2))
    else:
        for k, v in info.items():
            print(f"{k:11} {v}")
    return 0


def cmd_import(args: argparse.Namespace) -> int:
    from fedmisp.node.importer import ImportFileError, expand_paths, import_paths, print_progress_factory
    paths = [Path(p) for p in args.paths]
    missing = [str(p) for p in paths if not p.exists()]
    if missing:
        print(f"fedmisp import: not found: {', '.join(missing)}", file=sys.stderr)
        return 2
    with _open(args) as node:
        try:
            total = sum(1 for _ in expand_paths(paths))
            source = args.source or (str(paths[0]) if args.correlation_only and len(paths) == 1 else "")
            report = import_paths(node, paths, print_progress_factory(total), source=source,
                                  correlation_only=args.correlation_only, strict=args.strict)
        except ImportFileError as e:
            print(f"fedmisp import: {e}", file=sys.stderr)
            return 2
    for refusal in report.refused:
        print(f"refused: {refusal}", file=sys.stderr)
    for line in report.dropped_lines():
        print(line, file=sys.stderr)
    print(report.summary())
    return 1 if report.refused and not report.events_stored and not report.events_unchanged else 0


def cmd_correlate(args: argparse.Namespace) -> int:
    from fedmisp.correlate.engine import Correlator
    from fedmisp.correlate.warninglists import warninglist_hits
    with _open(args) as node:
        config = node.config.correlation if args.threshold is None else \
            dataclasses.replace(node.config.correlation, ssdeep_threshold=args.threshold)
        found = Correlator(node.store, config).value(args.value, args.type)
    hits = warninglist_hits(args.value) if args.warninglists else []
    if args.json:
        print(json.dumps({
            "value": args.value,
            "matches": [dataclasses.asdict(m) for m in found.matches],
            "over_correlating": found.over_correlating, "excluded": found.excluded, "warninglists": hits,
        }, indent=2))
        return 0
    if not found.matches:
        print(f"no correlation for {args.value!r}")
    for m in found.matches:
        where = f"source {m.source} (correlation only)" if m.correlation_only else f"event {m.event_uuid}"
        score = f" score {m.score}" if m.kind == "ssdeep" else ""
        print(f"{m.kind:6} {m.type:14} {m.value}  {where}: {m.event_info} ({m.org}){score}")
    for value, count in found.over_correlating.items():
        print(f"over-correlating: {value!r} matches {count} attributes (limit {config.max_matches}); not listed")
    for name in hits:
        print(f"warninglist: {name}")
    return 0


# the whole-store dumps, then restSearch's formats (export/formats.py) but its API-only json
EXPORT_FORMATS = ("misp-json", "feed", *(name for name in FORMATS if name != "json"))


def cmd_export(args: argparse.Namespace) -> int:
    from fedmisp.export.misp import events, write_feed, write_misp_json
    if args.format in ("misp-json", "feed") and (args.to_ids or args.enforce_warninglist):
        print("fedmisp export: --to-ids and --enforce-warninglist apply to csv, text, suricata, snort, zeek "
              "and stix2", file=sys.stderr)
        return 2
    if args.feed and args.format != "feed":
        print("fedmisp export: --feed NAME goes with --format feed", file=sys.stderr)
        return 2
    with _open(args) as node:
        if args.format == "feed":
            if not args.out:
                print("fedmisp export: --format feed needs --out DIR", file=sys.stderr)
                return 2
            feed_events = _with_galaxies(events(node.store, include_local=False))
            if args.feed:
                from fedmisp.gossip.replica import Replica
                from fedmisp.node.feeds import feed_events as served
                feed = next((f for f in node.config.served_feeds if f.name == args.feed), None)
                if feed is None:
                    known = ", ".join(f.name for f in node.config.served_feeds) or "none ([[served_feed]])"
                    print(f"fedmisp export: no served feed named {args.feed!r}; served feeds: {known}",
                          file=sys.stderr)
                    return 2
                feed_events = served(Replica(node), feed)
            n = write_feed(feed_events, Path(args.out))
            print(f"wrote a MISP feed of {n} event(s) to {args.out}", file=sys.stderr)
        elif args.format == "misp-json" and args.out:
            n = write_misp_json(node.store, Path(args.out), _with_galaxies(events(node.store)))
            print(f"wrote {n} event(s) to {args.out}", file=sys.stderr)
        elif args.format == "misp-json":
            # {"response": [...]}, as MISP's events/index returns, streamed event by event.
            sys.stdout.write('{"response": [')
            for i, event in enumerate(_with_galaxies(events(node.store))):
                sys.stdout.write(("," if i else "") + "\n" + json.dumps(event, ensure_ascii=False))
            sys.stdout.write("\n]}\n")
        else:
            out = open(args.out, "w", encoding="utf-8") if args.out else sys.stdout
            try:
                for piece in _protective_export(node, args):
                    out.write(piece)
            finally:
                if args.out:
                    out.close()
    return 0


def _with_galaxies(events: Iterable[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    """MISP JSON out carries `Galaxy` blocks where MISP puts them, derived from the cluster tags
    (decision 0027): the default clusters of the installed pymispgalaxies only, which are public
    data; a custom cluster's block is left to the API, which knows who may see the cluster."""
    from fedmisp.node.api.render import with_galaxies
    for event in events:
        with_galaxies(event)
        yield event


def _protective_export(node: Any, args: argparse.Namespace) -> Any:
    """CSV, text, IDS rules, Zeek intel or a STIX 2.1 bundle of what the node shows (as restSearch)."""
    from fedmisp.export import formats
    from fedmisp.export.misp import events
    from fedmisp.store import query
    fmt = formats.FORMATS[args.format]
    q = query.Query(to_ids=True if args.to_ids else None)  # IDS rules and Zeek intel: to_ids by the format
    export = formats.Export(node.store, f"fedmisp {node.config.org_name}")
    if fmt.events is not None:  # stix2: one report per event, of every event held
        shown = (e for e in events(node.store) if not e["Event"].get("deleted"))
        return fmt.events(export, formats.events(shown, q, fmt, enforce_warninglist=args.enforce_warninglist))
    return formats.attribute_export(export, q, fmt, enforce_warninglist=args.enforce_warninglist)


def cmd_feed_fetch(args: argparse.Namespace) -> int:
    """Fetch the [[feed]]s of fedmisp.toml now (all, or the one named), as the running node does."""
    import asyncio
    from fedmisp.node.feed_fetch import FeedError, fetch_feed
    from fedmisp.store.writer import Writer
    with _open(args) as node:
        feeds = [dataclasses.replace(f, strict=True) if args.strict else f
                 for f in node.config.feeds if args.name in (None, f.name)]
        if not feeds:
            known = ", ".join(f.name for f in node.config.feeds) or "none configured ([[feed]] in fedmisp.toml)"
            print(f"fedmisp feed fetch: no feed named {args.name!r}; feeds: {known}", file=sys.stderr)
            return 2

        async def fetch_all(writer: Writer) -> int:
            import aiohttp
            loop = asyncio.get_running_loop()

            async def run_blocking(fn: Callable[..., Any], *a: Any) -> Any:
                return await loop.run_in_executor(None, fn, *a)
            failures = 0
            async with aiohttp.ClientSession() as http:
                for feed in feeds:
                    try:
                        report = await fetch_feed(node, feed, lambda ev: asyncio.wrap_future(writer.submit(ev)),
                                                  run_blocking, http)
                    except FeedError as e:
                        print(f"fedmisp feed fetch: {e}", file=sys.stderr)
                        failures += 1
                        continue
                    for problem in report.refused + report.failed:
                        print(f"refused: {problem}" if problem in report.refused else f"failed: {problem}",
                              file=sys.stderr)
                    for line in report.dropped_lines():
                        print(line, file=sys.stderr)
                    print(report.summary())
            return failures
        with Writer(node.store) as writer:
            failures = asyncio.run(fetch_all(writer))
    return 1 if failures else 0


def cmd_misp_sync(args: argparse.Namespace) -> int:
    """`fedmisp misp pull|push --name PEER`: one pull from (or push to) a MISP peer now, as the
    running node does every interval_seconds (node/misp_sync.py); a summary, then what was refused."""
    import asyncio
    from fedmisp.node.misp_client import MispClient, MispError
    from fedmisp.node.misp_sync import pull, pulls, push, pushes
    from fedmisp.store.writer import Writer
    what = args.misp_cmd
    with _open(args) as node:
        peer = next((p for p in node.config.misp_peers if p.name == args.name), None)
        if peer is None:
            known = ", ".join(p.name for p in node.config.misp_peers) or "none ([[peer]] with kind = \"misp\")"
            print(f"fedmisp misp {what}: no MISP peer named {args.name!r}; MISP peers: {known}", file=sys.stderr)
            return 2
        if not (pulls if what == "pull" else pushes)(peer):
            print(f"fedmisp misp {what}: MISP peer {peer.name} is not one this node {what}s "
                  f"({'no misp_key' if not peer.may_call else f'mode {peer.mode.value}'})", file=sys.stderr)
            return 2

        async def run(writer: Writer) -> Any:
            loop = asyncio.get_running_loop()

            async def run_blocking(fn: Callable[..., Any], *a: Any) -> Any:
                return await loop.run_in_executor(None, fn, *a)

            async def submit(events: list[Any], checkpoint: tuple[str, int] | None) -> Any:
                return await asyncio.wrap_future(writer.submit(events, checkpoint=checkpoint))
            async with MispClient(peer) as client:
                return await (pull if what == "pull" else push)(node, peer, client, submit, run_blocking,
                                                                 full=args.full)
        try:
            with Writer(node.store) as writer:
                report = asyncio.run(run(writer))
        except (MispError, OSError) as e:  # OSError: the store could not be written (disk full, ...)
            print(f"fedmisp misp {what}: {e}", file=sys.stderr)
            return 1
    for problem in getattr(report, "refused", []):
        print(f"refused: {problem}", file=sys.stderr)
    for problem in report.failed:
        print(f"failed: {problem}", file=sys.stderr)
    for line in getattr(report, "dropped_lines", lambda: [])():
        print(line, file=sys.stderr)
    print(report.summary())
    return 1 if report.failed else 0


def cmd_status(args: argparse.Namespace) -> int:
    with _open(args) as node:
        stats = node.store.stats()
        status = {"org_name": node.config.org_name, "org_uuid": node.config.org_uuid,
                  "listen": node.config.listen, **stats}
    if args.json:
        print(json.dumps(status, indent=2))
        return 0
    print(f"fedmisp node {status['org_name']} ({status['org_uuid']}), API on {status['listen']}")
    print(f"  events       {stats['events']}")
    print(f"  attributes   {stats['attributes']}")
    print(f"  elements     {stats['elements']} (attributes, objects, references)")
    print(f"  records      {stats['records']} (revisions, orgs, sightings, proposals)")
    print(f"  log sequence {stats['sequence']}")
    print(f"  store size   {stats['store_bytes'] / 1e6:.1f} MB")
    _print_peers(args)
    return 0


def cmd_check(args: argparse.Namespace) -> int:
    """Verify the store read-only (safe while the node runs: LMDB readers never block the writer)."""
    with _open(args, readonly=True) as node:
        own = (node.identity.public_key, *(i.public_key for i in node.retired_identities))
        stats = node.store.stats()
        problems = node.store.check_integrity(own_keys=own)
    if args.json:
        print(json.dumps({"ok": not problems, "problems": problems, "events": stats["events"]}, indent=2))
    elif problems:
        print(f"{len(problems)} problem(s) in {node.config.store_path}:", file=sys.stderr)
        for problem in problems:
            print(f"  {problem}", file=sys.stderr)
    else:
        print(f"store sound: {stats['events']} events, {stats['elements']} elements verified, every event "
              "holds what this node is entitled to")
    return 1 if problems else 0


def _print_peers(args: argparse.Namespace) -> None:
    """Per-peer status from the running node, or the stored checkpoints when it is not running."""
    from fedmisp.node.config import load_config
    from fedmisp.node.operator import operator_get
    from fedmisp.store.store import Store
    config = load_config(_home(args))
    if not config.peers and not config.misp_peers:
        print("  peers        none configured")
        return
    refusal = ""
    try:
        peers = operator_get(config, "/node/v1/peers")
    except OSError:
        peers = None  # not running
    except ValueError as e:
        peers, refusal = None, f" (the running node refused the status request: {e})"
    print("  peers" + ("" if peers is not None else refusal or " (node not running: stored checkpoints only)"))
    if peers is None:
        from fedmisp.node.misp_sync import pull_checkpoint, push_checkpoint
        with Store(config.store_path, readonly=True) as store:
            for peer in config.peers:
                print(f"    {peer.name:16} {peer.policy.mode.value:16} checkpoint {store.checkpoint(peer.name)}")
            for misp in config.misp_peers:
                print(f"    {misp.name:16} {misp.mode.value:16} MISP {misp.url} pulled to MISP timestamp "
                      f"{store.checkpoint(pull_checkpoint(misp))}, pushed to log sequence "
                      f"{store.checkpoint(push_checkpoint(misp))}")
        return
    for name, p in peers.items():
        if p.get("kind") == "misp":
            # MISP calling this node (last pull / push), then this node calling it (checkpoints, outcomes)
            print(f"    {name:16} {p['mode']:16} MISP {p['url']} last pull {_when(p.get('last_pull'))} "
                  f"last push {_when(p.get('last_push'))}")
            if "pull_checkpoint" in p:
                print(f"      this node pulled to MISP timestamp {p['pull_checkpoint']}, pushed to log sequence "
                      f"{p['push_checkpoint']}")
            for what, label in (("last_pull_from", "last pull from it"), ("last_push_to", "last push to it")):
                if p.get(what):
                    print(f"      {label}: {p[what].get('error') or p[what].get('summary')}")
            continue
        refused = ", ".join(f"{k} {v}" for k, v in sorted(p["refused"].items())) or "none"
        print(f"    {name:16} {p['mode']:16} checkpoint {p['checkpoint']} lag {p['lag']} stored {p['stored']} "
              f"errors {p['errors']} in {p['bytes_in']} B out {p['bytes_out']} B refused: {refused}"
              + (f" last error: {p['last_error']}" if p["last_error"] else ""))


def _when(stamp: float | None) -> str:
    import time
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(stamp)) if stamp else "never (since start)"


def cmd_events(args: argparse.Namespace) -> int:
    """Like MISP's event index: one line per held event, newest first."""
    from rich.console import Console
    from rich.table import Table
    from fedmisp.model.misp import element_kind
    table = Table(title="Events held", title_justify="left")
    for column in ("uuid", "creator (Orgc)", "date", "dist", "attributes", "tags", "info"):
        table.add_column(column, overflow="fold", no_wrap=column in ("uuid", "date", "dist"))
    with _open(args) as node:
        rows = []
        for event_uuid in node.store.event_uuids():
            record, elements = node.store.revision(event_uuid)
            header = record.body["event"]
            attributes = sum(1 for e in elements if element_kind(e) == "attribute")
            local = node.store.local_tags([event_uuid]).get(event_uuid, [])
            tags = [t["name"] for t in header.get("Tag", [])] + [f"{t['name']} (local)" for t in local]
            rows.append((header["timestamp"], event_uuid, header["Orgc"]["name"], header["date"],
                         str(header["distribution"]), str(attributes), ", ".join(tags), header["info"]))
    for row in sorted(rows, reverse=True)[: args.limit]:
        table.add_row(*row[1:])
    Console(width=max(Console().width, 140)).print(table)
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    from fedmisp.node.server import run
    return run(_home(args), log_format=args.log_format, log_level=args.log_level)


def _rewrite_config(home: Path, change: "Callable[[str], str]") -> None:
    """Apply `change` to fedmisp.toml only if the result is a valid configuration (else keep the old)."""
    import os
    from fedmisp.node.config import CONFIG_FILE, load_config
    path = home / CONFIG_FILE
    old = path.read_text("utf-8")
    tmp = path.with_name(CONFIG_FILE + ".new")
    tmp.write_text(change(old), "utf-8")
    os.replace(tmp, path)
    try:
        load_config(home)
    except ConfigError:
        path.write_text(old, "utf-8")
        raise


def _current_peer_keys(config: Any) -> dict[str, bytes]:
    """Each peer's key after the rotations this node accepted (decision 0013); {} without a store."""
    from fedmisp.store.store import Store
    if not (config.store_path / "data.mdb").exists():
        return {}
    with Store(config.store_path, readonly=True) as store:
        return {peer.name: store.current_key(peer.key) for peer in config.peers}


def cmd_peer(args: argparse.Namespace) -> int:
    import tomllib
    import tomli_w
    from fedmisp.model.identity import encode_key
    home = _home(args)
    if args.peer_cmd == "add" and args.kind == KIND_MISP:
        return _add_misp_peer(args, home)
    if args.peer_cmd == "add":
        if not args.key:
            print("fedmisp peer add: --key: the peer's public key is needed for a fedmisp peer (its `fedmisp info`)",
                  file=sys.stderr)
            return 2
        if args.misp_key:
            print("fedmisp peer add: --misp-key is for a MISP peer (--kind misp)", file=sys.stderr)
            return 2
        entry = {"name": args.name, "url": args.url, "key": args.key, "mode": args.mode}
        if args.org_uuid:
            entry["org_uuid"] = args.org_uuid
        _rewrite_config(home, lambda text: text.rstrip("\n") + "\n\n" + tomli_w.dumps({"peer": [entry]}))
        print(f"added peer {args.name!r} ({args.mode}); a running node picks it up on `fedmisp reload`")
        return 0
    from fedmisp.node.config import load_config
    config = load_config(home)
    if args.peer_cmd == "list":
        if not config.peers:
            print("no peers configured (fedmisp peer add --home DIR --name NAME --url URL --key=KEY)")
        current = _current_peer_keys(config)
        for peer in config.peers:
            org = peer.policy.org_uuid or "(org learned on first contact)"
            print(f"{peer.name:20} {peer.policy.mode.value:16} {peer.url:32} {org}")
            if current.get(peer.name, peer.key) != peer.key:
                print(f"{'':20} key rotated: now {encode_key(current[peer.name])} (fedmisp.toml may keep the old one)")
        return 0
    # remove: rewrite the [[peer]] list without it, keeping the rest of the document
    misp = any(p.name == args.name for p in config.misp_peers)
    if not misp and not any(p.name == args.name for p in config.peers):
        print(f"fedmisp peer remove: no peer named {args.name!r}", file=sys.stderr)
        return 2

    def without(text: str) -> str:
        document = tomllib.loads(text)
        document["peer"] = [p for p in document.get("peer", []) if p.get("name") != args.name]
        if not document["peer"]:
            del document["peer"]
        header = "".join(line + "\n" for line in text.splitlines() if line.startswith("#"))
        return header + "\n" + tomli_w.dumps(document)
    _rewrite_config(home, without)
    print(f"removed peer {args.name!r}")
    if misp:
        with _open(args) as node:
            revoked = node.store.api_keys.revoke_peer(args.name)
        print(f"revoked its sync key{'s' if revoked != 1 else ''} ({revoked})")
    return 0


MISP_MODE_NAMES = tuple(m.value for m in MISP_MODES)


def _add_misp_peer(args: argparse.Namespace, home: Path) -> int:
    """`peer add --kind misp`: the [[peer]] table, and a sync key for the MISP side, printed once
    with what the MISP admin enters (Sync Actions > Servers > New server)."""
    import tomli_w
    from fedmisp.node.config import load_config
    if args.mode not in MISP_MODE_NAMES:
        print(f"fedmisp peer add: --mode {args.mode!r} is not for a MISP peer; accepted: {', '.join(MISP_MODE_NAMES)}",
              file=sys.stderr)
        return 2
    if args.key:
        print("fedmisp peer add: --key is a fedmisp peer's public key; a MISP peer has --misp-key (optional)",
              file=sys.stderr)
        return 2
    config = load_config(home)
    if any(p.name == args.name for p in (*config.peers, *config.misp_peers)):
        print(f"fedmisp peer add: a peer named {args.name!r} is configured already", file=sys.stderr)
        return 2
    entry = {"name": args.name, "kind": KIND_MISP, "url": args.url, "mode": args.mode}
    if args.org_uuid:
        entry["org_uuid"] = args.org_uuid
    if args.misp_key:
        entry["misp_key"] = args.misp_key
    _rewrite_config(home, lambda text: text.rstrip("\n") + "\n\n" + tomli_w.dumps({"peer": [entry]}))
    with _open(args) as node:
        key = node.create_api_key(SYNC_ROLE, f"MISP peer {args.name}", peer=args.name)
        org_name, org_uuid = node.config.org_name, node.config.org_uuid
        url = f"http://{node.config.listen}"
    print(f"added MISP peer {args.name!r} ({args.mode}); a running node picks it up on `fedmisp reload`")
    print(f"On the MISP instance (Sync Actions > Servers > New server) enter: Base URL {url} (this node's "
          f"address as MISP reaches it), Authkey the sync key below (shown once), Remote Sync Organisation "
          f"{org_name!r} uuid {org_uuid} (add it as an external organisation first).")
    print(key)  # last, alone on its line: what a script reads
    return 0


def cmd_config_check(args: argparse.Namespace) -> int:
    """Every problem of a node's configuration at once, each with the file and field."""
    from fedmisp.model.identity import Identity
    from fedmisp.node.config import KEY_FILE, load_config
    home = _home(args)
    problems: list[str] = []
    config = None
    try:
        config = load_config(home)
    except ConfigError as e:
        problems.extend(str(e).splitlines())
    if config is not None:
        from fedmisp.node.server import anti_entropy_seconds, connection_limits, max_request_bytes, pull_deadline_seconds
        for check in (max_request_bytes, connection_limits, anti_entropy_seconds, pull_deadline_seconds):  # read when the node starts
            try:
                check(config)
            except ConfigError as e:
                problems.extend(str(e).splitlines())
    try:
        Identity.load(home / KEY_FILE)
    except (OSError, ValueError) as e:  # PermissionError (mode) is an OSError
        problems.append(str(e))
    for problem in problems:
        print(problem, file=sys.stderr)
    if problems:
        print(f"{len(problems)} problem(s); the node would refuse this configuration", file=sys.stderr)
        return 1
    assert config is not None
    misp = f", {len(config.misp_peers)} MISP peer(s)" if config.misp_peers else ""
    print(f"{home / 'fedmisp.toml'}: ok ({len(config.peers)} peer(s){misp})")
    return _check_misp_online(config) if args.online else 0


def _check_misp_online(config: Any) -> int:
    """`config check --online`: what each MISP peer this node calls answers (its version, whether
    misp_key is a sync user's there); 1 when one cannot be used."""
    import asyncio
    from fedmisp.node.misp_client import MispClient, MispError

    async def check(peer: Any) -> str:
        async with MispClient(peer) as client:
            info = await client.check()
        return f"MISP peer {peer.name} ({peer.url}): MISP {info.version}, misp_key is a sync user's there"
    failures = 0
    for peer in config.misp_peers:
        if not peer.may_call:
            print(f"MISP peer {peer.name} ({peer.url}): no misp_key; it pulls from and pushes to this node only")
            continue
        try:
            print(asyncio.run(check(peer)))
        except MispError as e:
            print(str(e), file=sys.stderr)
            failures += 1
    return 1 if failures else 0


def cmd_reload(args: argparse.Namespace) -> int:
    """Ask the running node to read fedmisp.toml again (it keeps the old one if the new is invalid)."""
    from fedmisp.node.config import load_config
    home = _home(args)
    try:
        load_config(home)
    except ConfigError as e:
        print(f"fedmisp reload: the configuration is invalid; the node keeps the old one:\n{e}", file=sys.stderr)
        return 2
    pid = _signal_running_node(home)
    if pid is None:
        print(f"fedmisp reload: no running node for {home} (start it with: fedmisp run --home {home})",
              file=sys.stderr)
        return 2
    print(f"asked the node (pid {pid}) to reload {home}/fedmisp.toml")
    return 0


def _signal_running_node(home: Path) -> int | None:
    """SIGHUP to the node serving `home` (its pid file); its pid, or None if none runs."""
    import os
    import signal
    from fedmisp.node.server import PID_FILE
    try:
        pid = int((home / PID_FILE).read_text().strip())
        os.kill(pid, signal.SIGHUP)
    except (OSError, ValueError):
        return None
    return pid


def cmd_backup(args: argparse.Namespace) -> int:
    """A consistent compacted copy of the store, with the config and keys, while the node runs."""
    from fedmisp.node.backup import BackupError, write_backup
    try:
        info = write_backup(_home(args), Path(args.out).expanduser())
    except BackupError as e:
        print(f"fedmisp backup: {e}", file=sys.stderr)
        return 2
    m = info.manifest
    print(f"wrote {info.path}: store at log sequence {m['head_sequence']}, "
          f"{m['files']['store/data.mdb']['bytes'] / 1e6:.1f} MB, checksum {m['checksum'][:16]}")
    print("it holds the node's private key (file mode 0600): keep it as secret as the key itself")
    return 0


def cmd_restore(args: argparse.Namespace) -> int:
    from fedmisp.node.backup import BackupError, restore_backup
    home = _home(args)
    try:
        m = restore_backup(Path(args.source).expanduser(), home, force=args.force)
    except BackupError as e:
        print(f"fedmisp restore: {e}", file=sys.stderr)
        return 2
    print(f"restored {m['org_name']!r} ({m['org_uuid']}) from the backup of {m['created']} "
          f"(log sequence {m['head_sequence']}) into {home}")
    print("peers resume from their checkpoints: what this node stored after the backup comes back "
          "from them only if they hold it")
    return 0


def cmd_key(args: argparse.Namespace) -> int:
    """`fedmisp key rotate`: a new key, announced to peers signed by the old one (decision 0013)."""
    from fedmisp.model.identity import encode_key
    from fedmisp.node.keys import KeyRotationError, rotate_key
    home = _home(args)
    with _open(args) as node:
        try:
            record, kept = rotate_key(node)
        except KeyRotationError as e:
            print(f"fedmisp key rotate: {e}", file=sys.stderr)
            return 2
        print(f"new public key: {node.identity.public_key_text}")
        print(f"old public key: {encode_key(record.author)} (kept in {kept}, mode 0600: "
              "it proves what this node signed before; keep it as secret as the new one)")
    pid = _signal_running_node(home)
    if pid is not None:
        print(f"asked the running node (pid {pid}) to sign with the new key")
    else:
        print("no node is running for this home: the new key is used from the next `fedmisp run`")
    print("peers accept the new key when they pull the rotation; their fedmisp.toml may keep the old "
          "key (or be updated to the new one at leisure)")
    return 0


def cmd_key_vouch(args: argparse.Namespace) -> int:
    """`fedmisp key vouch --key=KEY`: this node vouches that KEY (the organisation's other node)
    signs for its organisation too; prints the token that node installs (decision 0019)."""
    from fedmisp.node.keys import VouchError, vouch_token
    with _open(args) as node:
        try:
            token = vouch_token(node, args.key)
        except (VouchError, ValueError) as e:
            print(f"fedmisp key vouch: {e}", file=sys.stderr)
            return 2
    print(token)
    print("on the other node: fedmisp key introduce --home DIR --vouch <the line above>", file=sys.stderr)
    return 0


def cmd_key_introduce(args: argparse.Namespace) -> int:
    """`fedmisp key introduce --vouch TOKEN`: this node's key introduced again, with the vouch of a
    key its organisation already has, so peers that know the organisation accept it."""
    from fedmisp.model.identity import encode_key
    from fedmisp.node.keys import VouchError, introduce_vouched
    with _open(args) as node:
        try:
            record = introduce_vouched(node, args.vouch)
        except VouchError as e:
            print(f"fedmisp key introduce: {e}", file=sys.stderr)
            return 2
        print(f"stored the introduction of {node.identity.public_key_text} for org {node.config.org_uuid}, "
              f"vouched by {encode_key(record.body['voucher'])}")
    print("peers take it at their next pull from this node")
    return 0


def cmd_sharing_group(args: argparse.Namespace) -> int:
    from fedmisp.gossip import sharing_groups as sg

    def members(values: list[str]) -> dict[str, bool]:
        out = {}
        for value in values or []:
            org, _, flag = value.partition(":")
            if flag not in ("", "extend"):
                raise ValueError(f"--member {value!r}: expected ORG_UUID or ORG_UUID:extend")
            out[org] = flag == "extend"
        return out
    with _open(args) as node:
        own = node.config.org_uuid
        try:
            if args.sg_cmd == "create":
                group = sg.create(node.store, node.identity, own, args.name, members(args.member), args.releasability)
                print(f"created sharing group {group.name!r} {group.uuid} with {len(group.members)} member(s)")
            elif args.sg_cmd == "add-member":
                group = sg.revise(node.store, node.identity, own, args.uuid, add=members(args.member))
                print(f"{group.uuid}: revision {group.revision}, {len(group.members)} member(s)")
            elif args.sg_cmd == "remove-member":
                group = sg.revise(node.store, node.identity, own, args.uuid, remove=tuple(args.org))
                print(f"{group.uuid}: revision {group.revision}, {len(group.members)} member(s)")
            else:
                for group in sg.current_groups(node.store).values():
                    listed = ", ".join(f"{o}{' (extend)' if e else ''}" for o, e in sorted(group.members.items()))
                    print(f"{group.uuid}  {group.name!r} rev {group.revision} owner {group.owner}: {listed}")
        except sg.SharingGroupError as e:
            print(f"fedmisp sharing-group: {e}", file=sys.stderr)
            return 2
    return 0


def cmd_template(args: argparse.Namespace) -> int:
    """Publish a custom MISP object template (a misp-objects definition.json), or list the
    published ones this node holds (decision 0030)."""
    import json

    from fedmisp.gossip.templates import publish
    from fedmisp.model.templates import TemplateError
    if args.template_cmd == "add":
        path = Path(args.file)
        try:
            definition = json.loads(path.read_text("utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            print(f"fedmisp template add: {path}: {e}", file=sys.stderr)
            return 2
    with _open(args, readonly=args.template_cmd == "list") as node:
        if args.template_cmd == "add":
            try:
                template, record = publish(node.store, node.identity, definition)
            except TemplateError as e:
                print(f"fedmisp template add: {path}: {e}", file=sys.stderr)
                return 2
            print(f"published object template {template.name!r} {template.uuid} version {template.version} "
                  f"({len(template.relations)} relations); peers take it at their next pull from this node")
            return 0
        orgs = {o["uuid"]: o.get("name", "") for o in node.store.orgs()}
        for record in sorted(node.store.template_records(), key=lambda r: r.body["name"]):
            body = record.body
            org = node.store.org_for_key(record.author) or "?"
            print(f"{body['uuid']}  {body['name']} v{body['version']} {body['meta-category']}  "
                  f"{len(body['attributes'])} relations  by {orgs.get(org, '')} {org}")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from fedmisp.node.demo import run_demo
    spec = Path(args.spec)
    if not spec.is_file():
        print(f"fedmisp demo: {spec} not found (run it from the project folder, or give --spec)", file=sys.stderr)
        return 2
    run_demo(spec, Path(args.dir), args.once)
    return 0


def cmd_apikey(args: argparse.Namespace) -> int:
    with _open(args) as node:
        if args.apikey_cmd == "create":
            print(node.create_api_key(args.role, args.comment or ""))
            return 0
        if args.apikey_cmd == "list":
            for key_hash, entry in node.store.api_keys.entries():
                print(f"{key_hash.hex()[:16]}  {entry['prefix']}…  {entry['role']:9}  {entry['comment']}")
            return 0
        # revoke by the id printed by list (a prefix of the key hash)
        matched = node.store.api_keys.revoke(args.id)
        if matched != 1:
            print(f"fedmisp apikey revoke: {matched} keys match {args.id!r}; "
                  "give the id shown by `fedmisp apikey list`", file=sys.stderr)
            return 2
        print("revoked")
        return 0


class _Parser(argparse.ArgumentParser):
    """argparse reads a separate value that begins with '-' as an option, and a public key (url-safe
    base64) begins with '-' one time in 64: such a value is given as `--key=VALUE` (a positional one
    after `--`), and the error for the other form says so. (Subparsers are made of this class too.)"""

    def error(self, message: str) -> NoReturn:
        option = re.match(r"argument (--[\w-]+)(?:/-\w)?: expected one argument", message)
        if option:
            message += f" (a value that begins with '-' is given as {option[1]}=VALUE)"
        elif message.startswith("unrecognized arguments: -") or re.match(
                r"the following arguments are required: (?!-)", message):
            message += " (a value that begins with '-' goes after `--`, e.g. `-- -VALUE`)"
        super().error(message)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="fedmisp", description="Federated MISP sync node")
    parser.add_argument("--version", action="version", version=f"fedmisp {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    def with_home(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
        p.add_argument("--home", required=True, help="the node's folder (config, key, store)")
        return p

    p = with_home(sub.add_parser("init", help="create a node: identity key, config, store, admin API key"))
    p.add_argument("--org", required=True, help="the organisation's name")
    p.add_argument("--listen", default=DEFAULT_LISTEN, help=f"API address HOST:PORT (default {DEFAULT_LISTEN})")
    p.add_argument("--org-uuid", help="the organisation's uuid, for its further node (default: a new one); "
                                      "the first node then vouches for this one: `fedmisp key vouch`")
    p.set_defaults(func=cmd_init)

    p = with_home(sub.add_parser("info", help="org uuid, name, public key, listen address"))
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_info)

    p = with_home(sub.add_parser("import", help="import MISP JSON files, folders or MISP feed folders"))
    p.add_argument("paths", nargs="+", metavar="PATH")
    p.add_argument("--correlation-only", action="store_true",
                   help="use these events for correlation only: matched, never shown or relayed")
    p.add_argument("--source", help="name the source in correlation results (default: the path)")
    p.add_argument("--strict", action="store_true",
                   help="refuse an event with any bad attribute, object, reference or tag (default: "
                        "store the event without it, as MISP does, and report what was dropped)")
    p.set_defaults(func=cmd_import)

    p = with_home(sub.add_parser("correlate", help="what the node holds that correlates with a value"))
    p.add_argument("value")
    p.add_argument("--type", help="the value's MISP type (default: guessed: IP, network, ssdeep or exact)")
    p.add_argument("--threshold", type=int, help="ssdeep score threshold (default: [correlation] in fedmisp.toml, 40)")
    p.add_argument("--no-warninglists", dest="warninglists", action="store_false",
                   help="skip the MISP warninglist check")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_correlate)

    p = with_home(sub.add_parser("export", help="export events as MISP JSON, a MISP feed, or for protective "
                                                  "tools (CSV, text, Suricata, Snort, Zeek intel, STIX 2.1)"))
    p.add_argument("--format", choices=EXPORT_FORMATS, default="misp-json")
    p.add_argument("--out", help="folder to write for misp-json and feed, file for the others "
                                 "(default: standard output)")
    p.add_argument("--feed", help="with --format feed: what the [[served_feed]] of this name publishes")
    p.add_argument("--to-ids", action="store_true", help="only attributes flagged for IDS (to_ids)")
    p.add_argument("--enforce-warninglist", action="store_true",
                   help="leave out values on a MISP warninglist (public resolvers, top domains, ...)")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("feed", help="MISP feeds this node fetches ([[feed]] in fedmisp.toml)")
    feed_cmds = p.add_subparsers(dest="feed_cmd", required=True)
    k = with_home(feed_cmds.add_parser("fetch", help="fetch what changed in the configured feeds now"))
    k.add_argument("name", nargs="?", help="one feed (default: every [[feed]])")
    k.add_argument("--strict", action="store_true",
                   help="refuse an event with any bad element (as the feed's strict = true)")
    k.set_defaults(func=cmd_feed_fetch)

    p = sub.add_parser("misp", help="MISP instances this node pulls from and pushes to ([[peer]] kind = \"misp\")")
    misp_cmds = p.add_subparsers(dest="misp_cmd", required=True)
    for name, help_text in (("pull", "pull what changed on a MISP peer now"),
                            ("push", "push what changed here to a MISP peer now")):
        k = with_home(misp_cmds.add_parser(name, help=help_text))
        k.add_argument("--name", required=True, help="the MISP peer ([[peer]] name)")
        k.add_argument("--full", action="store_true",
                       help="every event, not only those changed since the last one (MISP's full pull or push)")
        k.set_defaults(func=cmd_misp_sync)

    p = with_home(sub.add_parser("status", help="what the node holds"))
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_status)

    p = with_home(sub.add_parser("check", help="verify the store (signatures, digests, indexes, what each "
                                               "event should hold); read-only, safe while the node runs"))
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_check)

    p = with_home(sub.add_parser("events", help="list held events, newest first"))
    p.add_argument("--limit", type=int, default=50)
    p.set_defaults(func=cmd_events)

    p = with_home(sub.add_parser("run", help="serve the MISP-compatible REST API until SIGTERM / SIGINT"))
    p.add_argument("--log-format", choices=LOG_FORMATS, help="text or JSON lines (default: [log] format)")
    p.add_argument("--log-level", choices=LOG_LEVELS, help="the least level logged (default: [log] level)")
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("demo", help="start a small demo federation on 127.0.0.1 and show what flows where")
    p.add_argument("--spec", default="configs/demo/federation.toml")
    p.add_argument("--dir", default="demo", help="where the demo nodes live (emptied first)")
    p.add_argument("--once", action="store_true", help="print the tables and stop the nodes")
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("config", help="check a node's configuration")
    config_cmds = p.add_subparsers(dest="config_cmd", required=True)
    k = with_home(config_cmds.add_parser("check", help="report every problem at once, with file and field"))
    k.add_argument("--online", action="store_true",
                   help="also ask each MISP peer with misp_key what it answers (its version, the key's sync permission)")
    k.set_defaults(func=cmd_config_check)

    p = with_home(sub.add_parser("reload", help="make the running node read fedmisp.toml again"))
    p.set_defaults(func=cmd_reload)

    p = with_home(sub.add_parser("backup", help="copy store, config and keys to one file while the node runs"))
    p.add_argument("--out", required=True, help="the backup file to write (never overwritten)")
    p.set_defaults(func=cmd_backup)

    p = with_home(sub.add_parser("restore", help="replace a stopped node's home by a verified backup"))
    p.add_argument("--from", dest="source", required=True, help="the backup file")
    p.add_argument("--force", action="store_true", help="replace a store that holds records")
    p.set_defaults(func=cmd_restore)

    p = sub.add_parser("key", help="rotate the node's signing key, or vouch for the organisation's other node")
    key_cmds = p.add_subparsers(dest="key_cmd", required=True)
    k = with_home(key_cmds.add_parser("rotate", help="a new key, announced to peers signed by the old one"))
    k.set_defaults(func=cmd_key)
    k = with_home(key_cmds.add_parser(
        "vouch", help="vouch that another node's key signs for this organisation too; prints a token for it"))
    k.add_argument("--key", required=True, metavar="KEY",
                   help="the other node's public key (its `fedmisp info`); one that begins with '-' as --key=KEY")
    k.set_defaults(func=cmd_key_vouch)
    k = with_home(key_cmds.add_parser(
        "introduce", help="introduce this node's key again with a vouch from `fedmisp key vouch`"))
    k.add_argument("--vouch", required=True, help="the token `fedmisp key vouch` printed on the other node")
    k.set_defaults(func=cmd_key_introduce)

    p = sub.add_parser("peer", help="add, list or remove peers in fedmisp.toml")
    peers = p.add_subparsers(dest="peer_cmd", required=True)
    k = with_home(peers.add_parser("add"))
    k.add_argument("--name", required=True)
    k.add_argument("--url", required=True, help="the peer's address, e.g. http://127.0.0.1:8481")
    k.add_argument("--kind", default="fedmisp", choices=list(KINDS),
                   help="fedmisp (a node) or misp (a MISP instance: prints the sync key its admin enters)")
    k.add_argument("--key", metavar="KEY",
                   help="a fedmisp peer's public key (its `fedmisp info`); one that begins with '-' as --key=KEY")
    k.add_argument("--misp-key", help="a MISP peer: a sync user's key on the MISP instance, for this node to "
                   "pull from and push to it (optional)")
    k.add_argument("--org-uuid", help="the peer's organisation uuid (a fedmisp peer: default learned from its org "
                   "record; a MISP peer: the MISP instance's host organisation)")
    k.add_argument("--mode", default="full",
                   choices=["full", "push-only", "pull-only", "correlation-only", "internal"])
    with_home(peers.add_parser("list"))
    k = with_home(peers.add_parser("remove"))
    k.add_argument("name")
    p.set_defaults(func=cmd_peer)

    p = sub.add_parser("sharing-group", help="create, list and change sharing groups this node's org owns")
    groups = p.add_subparsers(dest="sg_cmd", required=True)
    k = with_home(groups.add_parser("create"))
    k.add_argument("--name", required=True)
    k.add_argument("--member", action="append", help="ORG_UUID or ORG_UUID:extend (repeatable)")
    k.add_argument("--releasability", default="")
    with_home(groups.add_parser("list"))
    k = with_home(groups.add_parser("add-member"))
    k.add_argument("uuid")
    k.add_argument("--member", action="append", required=True, help="ORG_UUID or ORG_UUID:extend")
    k = with_home(groups.add_parser("remove-member"))
    k.add_argument("uuid")
    k.add_argument("org", nargs="+")
    p.set_defaults(func=cmd_sharing_group)

    p = sub.add_parser("template", help="publish custom MISP object templates; list the published ones held")
    templates = p.add_subparsers(dest="template_cmd", required=True)
    k = with_home(templates.add_parser("add", help="validate, sign and publish a misp-objects definition.json"))
    k.add_argument("file", help="the template's definition.json")
    with_home(templates.add_parser("list"))
    p.set_defaults(func=cmd_template)

    p = sub.add_parser("apikey", help="create, list or revoke API keys")
    keys = p.add_subparsers(dest="apikey_cmd", required=True)
    k = with_home(keys.add_parser("create"))
    k.add_argument("--role", required=True, choices=list(ROLES))
    k.add_argument("--comment")
    with_home(keys.add_parser("list"))
    k = with_home(keys.add_parser("revoke"))
    k.add_argument("id", help="the id shown by `fedmisp apikey list`")
    p.set_defaults(func=cmd_apikey)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from fedmisp.node.home import HomeError
    try:
        return args.func(args)
    except (ConfigError, HomeError, PermissionError, ValueError) as e:
        print(f"fedmisp {args.command}: {e}", file=sys.stderr)
        return 2
    except BrokenPipeError:
        return 0
