"""The transport side of ``qrec serve`` (``qrec.serving.asgi``); the served answers themselves are
``test_serving_http``'s, through a real server that runs on these parts."""

from __future__ import annotations

import asyncio

from qrec.serving.asgi import _OneWrite


def test_one_write_sends_a_loop_steps_writes_together_in_order():
    """``_OneWrite`` (under ``qrec serve``'s uvicorn protocol): the writes of one event-loop step reach the
    transport as one, in order; ``close`` sends what is pending first; anything else is the transport's."""
    class Recorder(asyncio.Transport):  # the transport side of a connection, recording what it is given
        def __init__(self):
            super().__init__()
            self.writes, self.closed = [], False

        def write(self, data):
            self.writes.append(bytes(data))

        def close(self):
            self.closed = True

        def is_closing(self):
            return self.closed

        def get_extra_info(self, name, default=None):
            return {"peername": ("127.0.0.1", 1)}.get(name, default)

    async def main():
        raw = Recorder()
        wrapped = _OneWrite(raw, asyncio.get_running_loop())
        wrapped.write(b"HTTP/1.1 200 OK\r\n\r\n")
        wrapped.write(memoryview(b"{}"))
        assert raw.writes == []  # nothing yet: the step is not over
        await asyncio.sleep(0)
        wrapped.write(b"next")
        wrapped.close()  # flushes first
        return raw, wrapped

    raw, wrapped = asyncio.run(main())
    assert raw.writes == [b"HTTP/1.1 200 OK\r\n\r\n{}", b"next"] and raw.closed
    assert wrapped.get_extra_info("peername") == ("127.0.0.1", 1) and wrapped.is_closing()


def _call(app, method: str, path: str, headers: dict, messages: list) -> list:
    """One request through the ASGI ``app``: what it sent."""
    scope = {"type": "http", "method": method, "path": path, "headers": [(k.encode(), v.encode()) for k, v in headers.items()]}
    sent, pending = [], list(messages)

    async def receive():
        return pending.pop(0) if pending else {"type": "http.disconnect"}

    async def send(message):
        sent.append(message)

    asyncio.run(app(scope, receive, send))
    return sent


def test_front_answers_its_routes_refuses_bad_bodies_and_passes_the_rest_on():
    import json

    from qrec.serving.asgi import Front

    async def inner(scope, receive, send):  # the app behind: answers 299 with its path
        await send({"type": "http.response.start", "status": 299, "headers": []})
        await send({"type": "http.response.body", "body": scope["path"].encode()})

    async def echo(body):
        if body == b"boom":
            raise RuntimeError("boom")
        return 200, json.dumps({"got": body.decode()}).encode()

    front = Front(inner, limit=10, routes={("POST", "/echo"): echo})
    split = [{"type": "http.request", "body": b'ab', "more_body": True}, {"type": "http.request", "body": b"c"}]
    answer = lambda sent: (sent[0]["status"], json.loads(sent[1]["body"]))  # noqa: E731
    assert answer(_call(front, "POST", "/echo", {"content-length": "3"}, split)) == (200, {"got": "abc"})
    sent = _call(front, "POST", "/echo", {"content-length": "4"}, [{"type": "http.request", "body": b"boom"}])
    assert answer(sent) == (500, {"error": "internal error: RuntimeError"})
    assert answer(_call(front, "POST", "/echo", {"content-length": "11"}, []))[0] == 413
    assert answer(_call(front, "POST", "/other", {"content-length": "x1"}, []))[0] == 413
    assert answer(_call(front, "POST", "/echo", {"transfer-encoding": "chunked"}, []))[0] == 411
    assert _call(front, "POST", "/echo", {"content-length": "3"}, []) == []  # the client left: nothing to answer
    assert [m.get("status") for m in _call(front, "GET", "/echo", {}, [])] == [299, None]  # not its route
    assert _call(front, "POST", "/other", {"content-length": "2"}, [])[1]["body"] == b"/other"
