"""HTTP/1.1 for the proxy: reading requests, writing responses, dropping connections, forwarding.

Just enough HTTP/1.1 for an AWS SDK client: keep-alive, ``Content-Length`` and chunked request
bodies, ``Expect: 100-continue``. Everything is bounded (header size, body size, chunk count), so
a misbehaving client cannot make the proxy hang or grow without limit. :class:`Upstream` forwards
a request to the engine with aiohttp, passing bodies and headers through untouched.
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import http
import logging
import math
import socket
import struct
import uuid
import zlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Final
from urllib.parse import urlsplit

import aiohttp
import yarl

from kvstore.testing.faults.handles import ResetHow
from kvstore.testing.faults.rewrites import dumps, loads_object

__all__ = [
    "MAX_HEADER_BYTES",
    "MAX_REQUESTS_PER_CONNECTION",
    "UNKNOWN_OPERATION",
    "Request",
    "Response",
    "Upstream",
    "drop",
    "error_response",
    "hold",
    "json_response",
    "read_request",
    "response_json",
    "rewritten",
    "write_response",
]

logger = logging.getLogger(__name__)

UNKNOWN_OPERATION: Final = "Unknown"
"""The operation name recorded for requests without an ``X-Amz-Target`` header."""

MAX_HEADER_BYTES: Final = 64 * 1024
"""The longest request head accepted (the stream reader's limit)."""

MAX_REQUESTS_PER_CONNECTION: Final = 100_000
"""A keep-alive connection is closed after this many requests."""

_TARGET_PREFIX_SEP: Final = "."
_JSON_CONTENT_TYPE: Final = "application/x-amz-json-1.0"
_MAX_BODY_BYTES: Final = 32 * 1024 * 1024  # DynamoDB's own limit is 16 MB per request.
_MAX_CHUNKS: Final = 100_000
_HOLD_POLL_SECONDS: Final = 0.01

# Request headers not copied upstream: hop-by-hop ones (RFC 9110 7.6.1), the ones aiohttp
# computes itself for the new connection, and Expect, which the proxy answers itself.
_SKIP_REQUEST_HEADERS: Final = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "host",
        "content-length",
        "expect",
    }
)
# Response headers not copied back: hop-by-hop ones and Content-Length, which is recomputed.
_SKIP_RESPONSE_HEADERS: Final = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "content-length",
    }
)
# ...and additionally when the proxy rewrites the body.
_SKIP_REWRITTEN_HEADERS: Final = _SKIP_RESPONSE_HEADERS | {"x-amz-crc32", "content-encoding"}


@dataclass(slots=True)
class Request:
    """One HTTP request as read from the client.

    ``operation`` is the DynamoDB operation (from ``X-Amz-Target``); ``faulted`` is set once a
    fault acted on it, so it counts once in the statistics however many faults did.
    """

    method: str
    target: str
    version: str
    headers: list[tuple[str, str]]
    body: bytes
    operation: str
    keep_alive: bool
    faulted: bool = False
    _doc: dict[str, Any] | None = None
    _parsed: bool = False

    def json(self) -> dict[str, Any] | None:
        """The body as a JSON object, or ``None`` if it is not one (parsed once)."""
        if not self._parsed:
            self._parsed = True
            self._doc = loads_object(self.body)
        return self._doc


@dataclass(slots=True)
class Response:
    """One HTTP response, from the engine or made up by the proxy."""

    status: int
    reason: str
    headers: list[tuple[str, str]]
    body: bytes


class _BadRequest(Exception):
    """The client sent something this proxy cannot parse as HTTP/1.1."""


def _header(headers: Iterable[tuple[str, str]], name: str) -> str | None:
    lname = name.lower()
    for key, value in headers:
        if key.lower() == lname:
            return value
    return None


def _tokens(value: str | None) -> set[str]:
    if not value:
        return set()
    return {token.strip().lower() for token in value.split(",") if token.strip()}


def _operation(headers: Iterable[tuple[str, str]]) -> str:
    target = _header(headers, "X-Amz-Target")
    if not target:
        return UNKNOWN_OPERATION
    return target.rsplit(_TARGET_PREFIX_SEP, 1)[-1].strip() or UNKNOWN_OPERATION


def _crc32(body: bytes) -> str:
    return str(zlib.crc32(body) & 0xFFFFFFFF)


def _reason(status: int) -> str:
    try:
        return http.HTTPStatus(status).phrase
    except ValueError:
        return "Unknown"


def _made_up(status: int, reason: str, doc: Mapping[str, Any]) -> Response:
    body = dumps(doc)
    headers = [
        ("x-amzn-RequestId", str(uuid.uuid4())),
        ("Content-Type", _JSON_CONTENT_TYPE),
        ("x-amz-crc32", _crc32(body)),
    ]
    return Response(status, reason, headers, body)


def error_response(doc: Mapping[str, Any]) -> Response:
    """A DynamoDB-style HTTP 400 error with body ``doc`` (``__type`` included) and its CRC."""
    return _made_up(400, "Bad Request", doc)


def json_response(doc: Mapping[str, Any]) -> Response:
    """A DynamoDB-style HTTP 200 answer with body ``doc`` and the CRC botocore checks."""
    return _made_up(200, "OK", doc)


def rewritten(response: Response, doc: Mapping[str, Any]) -> Response:
    """The upstream response with a new JSON body, a matching CRC and no Content-Encoding."""
    body = dumps(doc)
    headers = [(k, v) for k, v in response.headers if k.lower() not in _SKIP_REWRITTEN_HEADERS]
    headers.append(("x-amz-crc32", _crc32(body)))
    return Response(response.status, response.reason, headers, body)


def response_json(response: Response) -> dict[str, Any] | None:
    """The response body as a JSON object (gunzipped if need be), or ``None``."""
    body = response.body
    encoding = (_header(response.headers, "Content-Encoding") or "identity").strip().lower()
    if encoding == "gzip":
        try:
            body = gzip.decompress(body)
        except (OSError, EOFError):
            return None
    elif encoding != "identity":
        return None
    return loads_object(body)


async def read_request(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> Request | None:
    """Read one HTTP/1.1 request; ``None`` when the client closed or sent garbage (answered 4xx)."""
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError:
        return None  # closed between requests (or mid-header)
    except asyncio.LimitOverrunError:
        await write_response(writer, Response(431, _reason(431), [], b""), keep_alive=False)
        return None
    try:
        lines = head[:-4].decode("latin-1").split("\r\n")
        method, target, version = lines[0].split(" ", 2)
        if not version.startswith("HTTP/1."):
            raise _BadRequest(version)
        headers: list[tuple[str, str]] = []
        for line in lines[1:]:
            name, sep, value = line.partition(":")
            if not sep or not name.strip():
                raise _BadRequest(line)
            headers.append((name.strip(), value.strip()))
        if "100-continue" in _tokens(_header(headers, "Expect")):
            writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
            await writer.drain()
        body = await _read_body(reader, headers)
    except (_BadRequest, ValueError):
        await write_response(writer, Response(400, _reason(400), [], b""), keep_alive=False)
        return None
    connection = _tokens(_header(headers, "Connection"))
    keep_alive = "close" not in connection if version == "HTTP/1.1" else "keep-alive" in connection
    return Request(method, target, version, headers, body, _operation(headers), keep_alive)


async def _read_body(reader: asyncio.StreamReader, headers: list[tuple[str, str]]) -> bytes:
    if "chunked" in _tokens(_header(headers, "Transfer-Encoding")):
        chunks: list[bytes] = []
        size_total = 0
        for _ in range(_MAX_CHUNKS):
            size_line = await reader.readuntil(b"\r\n")
            size = int(size_line.split(b";", 1)[0].strip(), 16)
            if size == 0:
                # Skip trailers up to the empty line.
                for _ in range(_MAX_CHUNKS):
                    if await reader.readuntil(b"\r\n") == b"\r\n":
                        return b"".join(chunks)
                raise _BadRequest("too many trailers")
            size_total += size
            if size_total > _MAX_BODY_BYTES:
                raise _BadRequest("body too large")
            chunks.append(await reader.readexactly(size))
            await reader.readexactly(2)
        raise _BadRequest("too many chunks")
    length_header = _header(headers, "Content-Length")
    if length_header is None:
        return b""
    length = int(length_header)
    if not 0 <= length <= _MAX_BODY_BYTES:
        raise _BadRequest("bad Content-Length")
    return await reader.readexactly(length)


async def write_response(writer: asyncio.StreamWriter, response: Response, *, keep_alive: bool) -> None:
    """Send ``response`` with a fresh Content-Length and a Connection header for ``keep_alive``."""
    lines = [f"HTTP/1.1 {response.status} {response.reason or _reason(response.status)}"]
    lines += [f"{k}: {v}" for k, v in response.headers if k.lower() not in _SKIP_RESPONSE_HEADERS]
    lines.append(f"Content-Length: {len(response.body)}")
    lines.append(f"Connection: {'keep-alive' if keep_alive else 'close'}")
    writer.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + response.body)
    await writer.drain()


async def hold(reader: asyncio.StreamReader, seconds: float) -> bool:
    """Wait ``seconds``; ``False`` as soon as the client hangs up (bounded polling)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    for _ in range(math.ceil(seconds / _HOLD_POLL_SECONDS) + 2):
        if reader.at_eof():
            return False
        remaining = deadline - loop.time()
        if remaining <= 0:
            return True
        await asyncio.sleep(min(_HOLD_POLL_SECONDS, remaining))
    return not reader.at_eof()


def drop(writer: asyncio.StreamWriter, how: ResetHow) -> None:
    """Drop the connection without an HTTP response: a TCP reset (``"rst"``) or a clean close."""
    transport = writer.transport
    if how == "rst":
        sock = writer.get_extra_info("socket")
        if sock is not None:
            # SO_LINGER with a zero timeout makes close() send RST instead of FIN.
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        transport.abort()
    else:
        transport.close()


class Upstream:
    """The engine the proxy forwards to: one aiohttp session, opened and closed by the proxy."""

    def __init__(self, url: str, timeout: float) -> None:
        """``url`` is ``scheme://host:port``; ``timeout`` bounds each forwarded request."""
        self.url: Final = url
        self._timeout = timeout
        self._session: aiohttp.ClientSession | None = None

    def open(self) -> None:
        """Create the session (in the running event loop)."""
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=256),
            timeout=aiohttp.ClientTimeout(total=self._timeout),
            # Pass bodies and headers through untouched: no decompression, and no headers of
            # aiohttp's own in place of the client's.
            auto_decompress=False,
            skip_auto_headers=("Accept", "Accept-Encoding", "User-Agent", "Content-Type"),
        )

    async def close(self) -> None:
        """Close the session, if open."""
        if self._session is not None:
            await self._session.close()

    async def send(self, request: Request, body: bytes) -> Response | None:
        """Forward ``request`` with ``body``; ``None`` when the engine gave no answer."""
        session = self._session
        if session is None:
            return None
        target = request.target
        if not target.startswith("/"):
            # Absolute-form target (a client configured to use this as an HTTP proxy).
            parts = urlsplit(target)
            target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        headers = [(k, v) for k, v in request.headers if k.lower() not in _SKIP_REQUEST_HEADERS]
        try:
            async with session.request(
                request.method,
                yarl.URL(self.url + target, encoded=True),
                headers=headers,
                data=body,
                allow_redirects=False,
            ) as upstream:
                payload = await upstream.read()
                raw = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in upstream.raw_headers]
                return Response(upstream.status, upstream.reason or "", raw, payload)
        except (TimeoutError, aiohttp.ClientError, OSError) as exc:
            logger.warning("FaultProxy: upstream %s failed: %r", self.url, exc)
            return None
