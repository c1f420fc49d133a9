"""Who may call each route: every route of the node declares it where it is declared, and an
application with a route that declares nothing refuses to start (`refuse_undeclared`).

The kinds of access (ACCESS):
- a role of an API key of this node (read-only < user < publisher < admin, docs/api.md): checked
  here, by `access_middleware`, before the handler runs. The key comes as MISP's
  `Authorization: <key>` or `X-MISP-AUTH`, or `Authorization: Bearer <key>` as monitoring tools send it;
- SYNC: a sync key, bound to one MISP peer of fedmisp.toml (`fedmisp peer add --kind misp`), for
  MISP's server sync. A sync key calls nothing else: a route the analyst API shares with MISP's
  sync (events/index, events/view, ...) answers a sync key through its sync view
  (node/api/misp_sync.py, given by `give_sync_view`), which decides for that peer; any other route
  refuses it;
- OPERATOR: an admin key, or a request signed with the node's own identity key (what `fedmisp
  status` sends; node/operator.py says why): checked here too;
- PEER_SIGNATURE: a configured peer's signed, boxed request, which gossip/http.py verifies as it
  reads the body (it must see the body's hash);
- ANY_KEY_UNLESS_OPEN: any API key of this node unless fedmisp.toml opens the route (a served
  feed's `access = "open"`, `metrics.require_api_key = false`); the handler reads that setting;
- PUBLIC: anyone (/node/v1/health).
"""
from __future__ import annotations

import logging
from typing import Any, Callable, TypeVar

from aiohttp import web

from fedmisp.gossip.auth import HEADER, AuthError, ReplayCache, verify_request
from fedmisp.gossip.http import PEER_SIGNATURE
from fedmisp.node.api.helpers import CTX, ROLE, ROLE_LEVEL, ApiContext, ApiError, Handler
from fedmisp.node.home import ROLES, SYNC_ROLE
from fedmisp.node.misp_config import MispPeer

log = logging.getLogger("fedmisp.api")

READ_ONLY, USER, PUBLISHER, ADMIN = ROLES
SYNC = SYNC_ROLE
OPERATOR = "operator"
ANY_KEY_UNLESS_OPEN = "any-key-unless-open"
PUBLIC = "public"
ACCESS = (*ROLES, SYNC, OPERATOR, PEER_SIGNATURE, ANY_KEY_UNLESS_OPEN, PUBLIC)
# the operator: an admin key, or the node's own key (node/operator.py)
OPERATOR_ROLE = ADMIN
OPERATOR_DENIED = ("Authentication failed: {path} needs an admin API key of this node (Authorization: <key>) "
                   "or a request signed with this node's identity key, as `fedmisp status` sends; see "
                   "docs/operations.md")
# The node's own public key (read per request: a key rotation takes effect without a restart) and
# the nonces of its signed operator requests, on the application that serves OPERATOR routes.
OWN_KEY = web.AppKey("own_key", Callable[[], bytes])
OPERATOR_REPLAYS = web.AppKey("operator_replays", ReplayCache)
# the MISP peer a sync key's request comes from (set before its sync view runs)
SYNC_PEER = web.RequestKey("sync_peer", MispPeer)
SYNC_ONLY = ("This key is the sync key of MISP peer {peer!r}: it may call only MISP's server sync routes "
             "(docs/api.md \"MISP server sync\"), not {path}")

H = TypeVar("H", bound=Handler)


def declare(access: str) -> Callable[[H], H]:
    """Who may call a handler, one of ACCESS; every route to the handler has that access."""
    if access not in ACCESS:
        raise ValueError(f"access {access!r}; expected one of {', '.join(ACCESS)}")

    def mark(handler: H) -> H:
        held = getattr(handler, "access", None)
        if held is not None and held != access:
            raise ValueError(f"{handler.__qualname__}: its routes declare {held} and {access}; one handler, one access")
        handler.access = access  # type: ignore[attr-defined]
        return handler
    return mark


class MispRoutes(web.RouteTableDef):
    """One API module's routes, each declared with its access: `@routes.post("/events/add", USER)`.
    MISP (CakePHP) answers `x` and `x.json` alike, so a path that ends in literal text gets its
    `.json` twin here, for every route; a path that ends in a placeholder reads `12.json` itself
    (helpers.path_ref). All routes to one handler declare the same access."""

    def route(self, method: str, path: str, access: str | None = None,  # type: ignore[override]
              **kwargs: Any) -> Callable[[H], H]:
        if access is None:
            raise TypeError(f"{method} {path}: a route declares its access (one of {', '.join(ACCESS)})")
        mark = declare(access)
        plain = super().route(method, path, **kwargs)
        twin = None if path.endswith(("}", ".json")) else super().route(method, path + ".json", **kwargs)

        def add(handler: H) -> H:
            plain(mark(handler))
            if twin is not None:
                twin(handler)
            return handler
        return add

    def get(self, path: str, access: str | None = None,  # type: ignore[override]
            **kwargs: Any) -> Callable[[H], H]:
        """(aiohttp answers HEAD from a GET route.)"""
        return self.route("GET", path, access, **kwargs)

    def post(self, path: str, access: str | None = None,  # type: ignore[override]
             **kwargs: Any) -> Callable[[H], H]:
        return self.route("POST", path, access, **kwargs)

    def delete(self, path: str, access: str | None = None,  # type: ignore[override]
               **kwargs: Any) -> Callable[[H], H]:
        return self.route("DELETE", path, access, **kwargs)

    def controller(self, *spellings: str) -> Controller:
        """Routes under each spelling of a MISP controller (CakePHP answers `/sharingGroups` and
        `/sharing_groups` alike, and PyMISP uses both)."""
        return Controller(self, spellings)


class Controller:
    """A MispRoutes' routes under each spelling of one controller: `get("/index", READ_ONLY)`
    declares `/sharingGroups/index` and `/sharing_groups/index` (with their `.json` twins)."""

    def __init__(self, routes: MispRoutes, spellings: tuple[str, ...]):
        self.routes = routes
        self.spellings = spellings

    def route(self, method: str, path: str, access: str | None = None) -> Callable[[H], H]:
        declarations = [self.routes.route(method, base + path, access) for base in self.spellings]

        def add(handler: H) -> H:
            for declaration in declarations:
                declaration(handler)
            return handler
        return add

    def get(self, path: str, access: str | None = None) -> Callable[[H], H]:
        return self.route("GET", path, access)

    def post(self, path: str, access: str | None = None) -> Callable[[H], H]:
        return self.route("POST", path, access)

    def delete(self, path: str, access: str | None = None) -> Callable[[H], H]:
        return self.route("DELETE", path, access)


def give_sync_view(handler: Handler, view: Handler) -> None:
    """A sync key's request to `handler`'s routes is answered by `view` (node/api/misp_sync.py):
    MISP's sync calls some routes the analyst API serves too, and answers them for its peer."""
    if declared(view) != SYNC:
        raise ValueError(f"{view.__qualname__}: a sync view declares {SYNC}")
    handler.sync_view = view  # type: ignore[attr-defined]


def sync_view(handler: object) -> Handler | None:
    """What answers a sync key's request to `handler` (None: a sync key may not call it)."""
    if declared(handler) == SYNC:
        return handler  # type: ignore[return-value]
    return getattr(handler, "sync_view", None)


def declared(handler: object) -> str | None:
    """The access a route's handler declares (None: it declares none, or none of ACCESS)."""
    access = getattr(handler, "access", None)
    return access if access in ACCESS else None


class UndeclaredAccess(RuntimeError):
    """An application holds a route that does not say who may call it."""


def undeclared_routes(app: web.Application) -> list[str]:
    """`METHOD path` of every route of `app` (its sub-applications' included) that declares no access."""
    return [f"{r.method} {r.resource.canonical if r.resource is not None else '?'}"
            for r in app.router.routes() if declared(r.handler) is None]


async def refuse_undeclared(app: web.Application) -> None:
    """An on_startup hook: the application does not start while a route declares no access."""
    missing = undeclared_routes(app)
    if missing:
        raise UndeclaredAccess("routes that declare no access (a MispRoutes route names its access; other "
                               "handlers `declare` it): " + ", ".join(missing))


@web.middleware
async def access_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Refuses a request its route's declared access does not let through, before the handler runs.
    A route that declares nothing is refused (the application does not start with one anyway)."""
    if request.match_info.http_exception is not None:
        return await handler(request)  # not found / not allowed: answered by the errors middleware
    handler_ = getattr(request.match_info, "handler", None)
    need = declared(handler_)
    entry = key_entry(request.app[CTX], request_key(request))
    if entry is not None and entry.get("role") == SYNC and need != PEER_SIGNATURE:  # (a signature decides those)
        return await _as_sync(request, handler_, entry)
    if need == SYNC:
        raise ApiError(403, f"Authentication failed: {request.path} is for MISP's server sync; it needs the sync "
                       "key of a MISP peer of this node (fedmisp peer add --kind misp prints one)")
    if need in ROLE_LEVEL:
        role = entry_role(entry)
        if role is None:
            raise ApiError(403, "Authentication failed. Please make sure you pass the API key of an API enabled "
                           "user along in the Authorization header.")
        if ROLE_LEVEL[role] < ROLE_LEVEL[need]:
            raise ApiError(403, f"You do not have permission to do that. (this key's role is {role}; "
                           f"{request.path} needs {need} or above)")
        request[ROLE] = role
    elif need == OPERATOR:
        await _check_operator(request)
    elif need not in (PEER_SIGNATURE, ANY_KEY_UNLESS_OPEN, PUBLIC):  # (their handlers check the first two)
        log.error("%s %s: its route declares no access; refused", request.method, request.path)
        raise ApiError(403, f"{request.path}: this route declares no access, so nobody may call it")
    return await handler(request)


async def _as_sync(request: web.Request, handler: object, entry: dict[str, Any]) -> web.StreamResponse:
    """A sync key's request: answered by the route's sync view for the key's MISP peer, if the route
    has one and the peer is still configured; refused otherwise."""
    peer = sync_peer_of(request.app[CTX], entry)
    if peer is None:
        raise ApiError(403, "Authentication failed: this sync key's MISP peer "
                       f"{entry.get('peer')!r} is no longer configured on this node (fedmisp.toml [[peer]])")
    view = sync_view(handler)
    if view is None:
        raise ApiError(403, SYNC_ONLY.format(peer=peer.name, path=request.path))
    request[SYNC_PEER] = peer
    return await view(request)


def sync_peer_of(ctx: ApiContext, entry: dict[str, Any]) -> MispPeer | None:
    """The configured MISP peer a sync key's entry is bound to (read at each use: a reload counts)."""
    return next((p for p in ctx.node.config.misp_peers if p.name == entry.get("peer")), None)


async def _check_operator(request: web.Request) -> None:
    """An admin key, or a request signed by the node's own key (the peer protocol's header with
    that key as the only pinned one, so the same clock-skew and replay checks apply)."""
    if request.headers.get(HEADER) is not None:
        try:
            verify_request(request.headers[HEADER], request.method, request.path, b"",
                           {request.app[OWN_KEY](): "self"}, request.app[OPERATOR_REPLAYS])
        except AuthError as e:
            raise ApiError(403, OPERATOR_DENIED.format(path=request.path) + f" ({HEADER}: {e.reason})") from None
        return
    if await request_role(request) != OPERATOR_ROLE:
        raise ApiError(403, OPERATOR_DENIED.format(path=request.path))


def request_key(request: web.Request) -> str:
    """The request's API key: MISP's `Authorization: <key>` and `X-MISP-AUTH`, and
    `Authorization: Bearer <key>` as monitoring tools (Prometheus) send it."""
    key = (request.headers.get("Authorization") or request.headers.get("X-MISP-AUTH") or "").strip()
    return key[7:].strip() if key[:7].lower() == "bearer " else key


async def request_role(request: web.Request) -> str | None:
    """The role of the request's API key (None: no valid key)."""
    # On the loop, not in the thread pool: one point read of the small, hot apikeys table costs
    # about 10 us, less than the hop to a worker thread and back (bench/api.py).
    return role_of(request.app[CTX], request_key(request))


def key_entry(ctx: ApiContext, key: str) -> dict[str, Any] | None:
    """The stored entry of an API key of this node (None: no such key)."""
    if not key or len(key) > 256:
        return None
    return ctx.store.api_keys.entry(key)


def role_of(ctx: ApiContext, key: str) -> str | None:
    """The role of an API key of this node on the ladder of ROLES (None: no such key, or a sync key,
    which no route outside MISP's sync accepts)."""
    return entry_role(key_entry(ctx, key))


def entry_role(entry: dict[str, Any] | None) -> str | None:
    role = entry.get("role") if entry is not None else None
    return role if role in ROLE_LEVEL else None
