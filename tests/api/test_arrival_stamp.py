"""A long-poll's wait counts from when the server read the request's head (issue 8, item 3).

Under a burst, a request read at once can wait for its turn on the event loop before any
application code runs. The protocol stamps the read time into the scope, and the guard keeps it;
each test blocks the loop between the read and the application on purpose.
Breakages caught: the protocol not stamping (the app sees only the guard's later time), the
guard overwriting the protocol's stamp.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
import uvicorn
from uvicorn.server import ServerState

from corral.api import guard, protocol

BLOCK = 0.3
HEAD = b"GET /v1/tickets/x?wait=5 HTTP/1.1\r\nhost: test\r\n\r\n"


class _Transport(asyncio.Transport):
    def __init__(self) -> None:
        super().__init__()
        self.closing = False

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"sockname": ("127.0.0.1", 8000), "peername": ("127.0.0.1", 50000)}.get(
            name, default
        )

    def write(self, data: Any) -> None:
        pass

    def is_closing(self) -> bool:
        return self.closing

    def close(self) -> None:
        self.closing = True

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


async def _seen_by_app(parser: protocol.Parser, app_wrapper: Any) -> tuple[float, float, float]:
    """(when the head was fed, the arrival the app saw, when the app started)."""
    seen: dict[str, float] = {}

    async def app(scope: Any, receive: Any, send: Any) -> None:
        seen["arrived"] = guard.arrived_at(scope) or -1.0
        seen["started"] = asyncio.get_running_loop().time()
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    config = uvicorn.Config(app_wrapper(app), lifespan="off", log_level="warning")
    config.load()
    cls = protocol.limited(5.0, parser)
    proto = cls(config=config, server_state=ServerState(), app_state={})
    proto.connection_made(_Transport())
    loop = asyncio.get_running_loop()
    fed = loop.time()
    proto.data_received(HEAD)
    time.sleep(BLOCK)  # the loop is busy elsewhere before the request's task gets its turn
    for _ in range(100):
        if "started" in seen:
            break
        await asyncio.sleep(0.01)
    proto.connection_lost(None)
    return fed, seen["arrived"], seen["started"]


def _plain(app: Any) -> Any:
    return app


def _guarded(app: Any) -> Any:
    class _Auth:
        def authenticate(self, header: str | None) -> Any:
            return None

    return guard.Guard(app, auth=_Auth(), max_body=1024)  # type: ignore[arg-type]


@pytest.mark.parametrize("parser", ["h11", "httptools"])
@pytest.mark.parametrize("wrapper", [_plain, _guarded], ids=["protocol", "through-guard"])
async def test_the_arrival_is_when_the_head_was_read(parser: protocol.Parser, wrapper: Any) -> None:
    fed, arrived, started = await _seen_by_app(parser, wrapper)
    assert started - fed >= BLOCK * 0.9, "the loop was blocked before the app ran"
    assert fed <= arrived < fed + BLOCK / 2, (
        f"arrival {arrived - fed:+.3f} s after the head was read; the app started "
        f"{started - fed:+.3f} s after"
    )
