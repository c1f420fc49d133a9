"""This node as a client of a MISP instance's REST API, as MISP's own server sync calls it
(app/Lib/Tools/ServerSyncTool.php): the key of a sync user in Authorization, JSON both ways.

Every request has a deadline (the peer's timeout_seconds) and every answer a size bound
(max_event_bytes); redirects are not followed (MISP answers an API client directly, and a redirect
would carry the key elsewhere). Whatever goes wrong ends in one MispError that names the MISP
instance's URL and what failed (unreachable, TLS, the key refused, not a MISP, too old, no sync
permission), never a traceback and never the key.
"""
from __future__ import annotations

import asyncio
import json
import re
import ssl
from dataclasses import dataclass
from typing import Any

import aiohttp

from fedmisp import __version__
from fedmisp.node.misp_config import MispPeer

USER_AGENT = f"fedmisp/{__version__} (MISP server sync)"
# The oldest MISP this node syncs with: 2.4.156 is where MISP's own sync reads and serves events as
# this node does (the minimal event index with `protected`, EventsController::__indexRestResponse;
# older instances are refused by MISP's own pull too).
MIN_VERSION = (2, 4, 156)
_VERSION = re.compile(r"(\d{1,4})\.(\d{1,4})\.(\d{1,6})")
# Characters of a MISP error message quoted in ours (its `message`, `name` or `errors` field).
QUOTED = 300


class MispError(Exception):
    """A call to a MISP instance failed; the message names the instance's URL and what failed."""


class AnswerTooLarge(MispError):
    """The answer was larger than max_event_bytes: the same next time, unlike a failed connection."""


@dataclass(frozen=True)
class MispInfo:
    """What /servers/getVersion said about the MISP instance and the key's user there."""
    version: str
    perm_sync: bool
    perm_sighting: bool
    uuid: str  # the instance's MISP.uuid


class MispClient:
    """One MISP peer's REST API for this node, over one aiohttp session (`async with`)."""

    def __init__(self, peer: MispPeer):
        self.peer = peer
        self._http: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> "MispClient":
        self._http = aiohttp.ClientSession(
            headers={"Authorization": self.peer.misp_key, "Accept": "application/json",
                     "Content-Type": "application/json", "User-Agent": USER_AGENT},
            timeout=aiohttp.ClientTimeout(total=self.peer.timeout_seconds))
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._http is not None:
            await self._http.close()

    def _fail(self, path: str, what: str, kind: type[MispError] = MispError) -> MispError:
        return kind(f"MISP peer {self.peer.name} ({self.peer.url}{path}): {what}")

    def _ssl(self) -> ssl.SSLContext | bool:
        if not self.peer.url.startswith("https://"):
            return True
        if not self.peer.tls_verify:
            return False
        return ssl.create_default_context(cafile=str(self.peer.ca_file) if self.peer.ca_file else None)

    async def call(self, method: str, path: str, body: Any = None, *, limit: int | None = None) -> Any:
        """One request; the JSON answer of a 2xx, else MispError. `limit`: bytes of answer accepted
        (the peer's max_event_bytes by default)."""
        status, raw = await self.request(method, path, body, limit=limit)
        if not 200 <= status < 300:
            raise self._fail(path, self.status_problem(status, raw))
        return self._json(path, raw)

    async def request(self, method: str, path: str, body: Any = None, *,
                      limit: int | None = None) -> tuple[int, bytes]:
        """One request: (HTTP status, body), the body read up to `limit` bytes."""
        assert self._http is not None, "MispClient is used in `async with`"
        limit = self.peer.max_event_bytes if limit is None else limit
        data = None if body is None else json.dumps(body, ensure_ascii=False).encode("utf-8")
        try:
            async with self._http.request(method, self.peer.url + path, data=data, ssl=self._ssl(),
                                          allow_redirects=False) as response:
                if response.content_length is not None and response.content_length > limit:
                    raise self._fail(path, f"an answer of {response.content_length} bytes; at most {limit} "
                                           "are accepted (max_event_bytes)", AnswerTooLarge)
                raw = bytearray()
                async for chunk in response.content.iter_chunked(1 << 16):
                    raw += chunk
                    if len(raw) > limit:
                        raise self._fail(path, f"an answer of more than {limit} bytes (max_event_bytes)",
                                         AnswerTooLarge)
                return response.status, bytes(raw)
        except (aiohttp.ClientConnectorCertificateError, aiohttp.ClientSSLError) as e:
            raise self._fail(path, f"TLS failed: {_reason(e)} (tls_verify, ca_file)") from None
        except aiohttp.ClientConnectorError as e:
            raise self._fail(path, f"unreachable: {_reason(e)}") from None
        except asyncio.TimeoutError:
            raise self._fail(path, f"no answer within {self.peer.timeout_seconds:g} s (timeout_seconds)") from None
        except aiohttp.ClientError as e:
            raise self._fail(path, f"the connection failed: {type(e).__name__}: {_reason(e)}") from None

    def status_problem(self, status: int, raw: bytes) -> str:
        if status in (401, 403):
            return (f"HTTP {status}: misp_key was refused (a wrong or expired key, or its user is disabled "
                    "or may not use the API)" + _misp_message(raw))
        if 300 <= status < 400:
            return f"HTTP {status}: a redirect, which a MISP instance does not answer an API client"
        return f"HTTP {status}" + _misp_message(raw)

    def _json(self, path: str, raw: bytes) -> Any:
        try:
            return json.loads(raw.decode("utf-8-sig")) if raw.strip() else None
        except (UnicodeDecodeError, ValueError, RecursionError):
            raise self._fail(path, "the answer is not JSON; is this URL a MISP instance?") from None

    async def check(self) -> MispInfo:
        """/servers/getVersion, as MISP's sync starts: a MISP, recent enough, the key a sync user's."""
        path = "/servers/getVersion"
        status, raw = await self.request("GET", path, limit=1 << 20)
        if status == 404:
            raise self._fail(path, "HTTP 404: not a MISP instance, or not its base URL (MISP answers its "
                                   "version there)")
        if not 200 <= status < 300:
            raise self._fail(path, self.status_problem(status, raw))
        answer = self._json(path, raw)
        version = answer.get("version") if isinstance(answer, dict) else None
        match = _VERSION.match(version) if isinstance(version, str) else None
        if match is None:
            raise self._fail(path, "the answer has no MISP version; is this URL a MISP instance?")
        if tuple(map(int, match.groups())) < MIN_VERSION:
            raise self._fail(path, f"MISP {version} is too old; this node syncs with MISP "
                                   f"{'.'.join(map(str, MIN_VERSION))} or later")
        if answer.get("perm_sync") is not True:
            raise self._fail(path, "the user of misp_key has no sync permission there; give it MISP's "
                                   "\"Sync user\" role (Administration > Users)")
        return MispInfo(version=version, perm_sync=True, perm_sighting=answer.get("perm_sighting") is True,
                        uuid=str(answer.get("uuid", "")))


def _reason(error: BaseException) -> str:
    os_error = getattr(error, "os_error", None)
    return str(getattr(os_error, "strerror", None) or os_error or error or type(error).__name__)[:QUOTED]


def _misp_message(raw: bytes) -> str:
    """MISP's own words about a refusal (its JSON `message`, `errors` or `name`), if it gave any."""
    try:
        answer = json.loads(raw.decode("utf-8", "replace"))
    except ValueError:
        return ""
    if not isinstance(answer, dict):
        return ""
    for key in ("message", "errors", "name"):
        if answer.get(key):
            return f" (MISP: {str(answer[key])[:QUOTED]})"
    return ""
