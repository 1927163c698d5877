"""The transport side of ``qrec serve``: a plain ASGI front that answers the hot route before FastAPI, and uvicorn
run with one write per response.

On single-user requests FastAPI's middleware stack, routing and dependency solving cost more CPU than scoring a
small model, and uvicorn's two writes per response (status line and headers, then the body) are two system
calls and two TCP segments the client wakes up for (BENCHMARKS.md, "Serving over HTTP").
"""

from __future__ import annotations

import json


def json_bytes(payload) -> bytes:
    """``payload`` as Starlette's ``JSONResponse`` renders it (UTF-8, compact, no NaN)."""
    return json.dumps(payload, ensure_ascii=False, allow_nan=False, separators=(",", ":")).encode()


async def respond(send, status: int, body: bytes) -> None:
    """A whole JSON response through ASGI ``send``."""
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body))]})
    await send({"type": "http.response.body", "body": body})


class Front:
    """Plain ASGI in front of the FastAPI ``app``: refuses a body over ``limit`` bytes by its Content-Length (413)
    and one without a length (411) before reading it, and answers ``routes`` (``(method, path) -> async
    handler(body) -> (status, JSON bytes)``) itself: FastAPI's middleware stack, routing, dependency solving
    and response classes cost more CPU per request than scoring a small model. Everything else, lifespan
    included, is the app's."""

    def __init__(self, app, limit: int, routes: dict):
        self.app, self.limit, self.routes = app, limit, routes

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http" and scope["method"] in ("POST", "PUT", "PATCH"):
            headers = dict(scope["headers"])
            length = headers.get(b"content-length")
            if length is None and headers.get(b"transfer-encoding"):
                return await respond(send, 411, json_bytes({"error": "send the body with a Content-Length"}))
            if length is not None and (not length.isdigit() or int(length) > self.limit):
                return await respond(send, 413, json_bytes({"error": f"request body over {self.limit} bytes"}))
            handler = self.routes.get((scope["method"], scope["path"]))
            if handler is not None:
                return await self._answer(handler, receive, send)
        await self.app(scope, receive, send)

    @staticmethod
    async def _answer(handler, receive, send) -> None:
        chunks, more = [], True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunks.append(message.get("body", b""))
            more = message.get("more_body", False)
        try:
            status, body = await handler(b"".join(chunks))
        except Exception as e:  # noqa: BLE001 - the server answers, whatever happened
            status, body = 500, json_bytes({"error": f"internal error: {type(e).__name__}"})
        await respond(send, status, body)


def uvicorn_config(app, host: str = "127.0.0.1", port: int = 8000, access_log: bool = False, log_level: str = "info"):
    """How ``qrec serve`` runs ``app``: uvicorn with httptools and uvloop where installed, one write per response."""
    import uvicorn

    return uvicorn.Config(app, host=host, port=port, log_level=log_level, access_log=access_log,
                          http=_one_write_protocol() or "auto")


class _OneWrite:
    """A transport whose writes within one event-loop step leave as one: uvicorn writes a response's status line
    and headers, then its body, and each write is a system call and, over TCP, a segment the client wakes up
    for. Order is kept; ``close`` sends what is pending first. Everything else is the transport's."""

    def __init__(self, transport, loop):
        self._transport, self._loop, self._pending = transport, loop, []

    def write(self, data) -> None:
        if not self._pending:
            self._loop.call_soon(self._flush)
        self._pending.append(bytes(data))

    def _flush(self) -> None:
        data, self._pending = b"".join(self._pending), []
        if data and not self._transport.is_closing():
            self._transport.write(data)

    def close(self) -> None:
        self._flush()
        self._transport.close()

    def abort(self) -> None:
        self._pending = []
        self._transport.abort()

    def __getattr__(self, name):
        return getattr(self._transport, name)


def _one_write_protocol():
    """uvicorn's httptools protocol over ``_OneWrite`` transports; None without httptools (uvicorn's h11 then)."""
    try:
        from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
    except ImportError:  # pragma: no cover - httptools is a dependency of the serve extra
        return None

    class OneWriteProtocol(HttpToolsProtocol):
        def connection_made(self, transport) -> None:
            super().connection_made(_OneWrite(transport, self.loop))

    return OneWriteProtocol
