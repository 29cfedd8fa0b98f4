"""Attacks on a real `facegate serve` process on 127.0.0.1: an unauthenticated chunked body that
keeps coming (it used to be read to the limit before the 401), and the permissions of the data dir
serve creates (it used to be 0755)."""

from __future__ import annotations

import contextlib
import re
import select
import socket
import stat
import time
from urllib.parse import urlsplit

import httpx
import pytest

from serve_support import start_serve

CHUNK = b" " * 65536
SEND_CAP = 64 * 2**20  # the client gives up after this much (the server's limit is far above)
EARLY = 16 * 2**20  # what may be in flight in socket buffers when the answer arrives


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """`facegate serve` on a data dir that does not exist yet, with a body limit of 256 MiB."""
    root = tmp_path_factory.mktemp("serve")
    data_dir = root / "fresh" / "store"
    srv = start_serve(data_dir, root, {"FACEGATE_MAX_BODY_BYTES": str(256 * 2**20)})
    try:
        yield srv.url, data_dir, srv.admin_key
    finally:
        srv.stop()


def send_endless_chunked(url: str, path: str, headers: dict[str, str]) -> tuple[int, bytes]:
    """POST a chunked body that keeps coming until the server answers (or SEND_CAP / 20 s).
    Returns the bytes sent when the answer's status line arrived, and the answer so far."""
    host = urlsplit(url)
    sock = socket.create_connection((host.hostname, host.port), timeout=5)
    head = f"POST {path} HTTP/1.1\r\nHost: {host.netloc}\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n"
    head += "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    sock.sendall((head + "\r\n").encode())
    sock.setblocking(False)
    frame = b"%x\r\n" % len(CHUNK) + CHUNK + b"\r\n"
    sent, answer, deadline = 0, b"", time.monotonic() + 20
    try:
        while sent < SEND_CAP and time.monotonic() < deadline and b"\r\n\r\n" not in answer:
            readable, writable, _ = select.select([sock], [sock], [], 1)
            if readable:
                data = sock.recv(65536)
                if not data:
                    break
                answer += data
            elif writable:
                with contextlib.suppress(BlockingIOError):
                    sent += sock.send(frame)
    except (BrokenPipeError, ConnectionResetError):
        # The server closed with the body unread, so its kernel reset the connection; the answer
        # it sent first is still queued here (Linux keeps received data after a reset).
        answer += _queued(sock)
    finally:
        sock.close()
    return sent, answer


def _queued(sock: socket.socket) -> bytes:
    """What the peer sent that is still in the socket's receive queue."""
    out = b""
    with contextlib.suppress(OSError):
        while b"\r\n\r\n" not in out and select.select([sock], [], [], 1)[0] and (data := sock.recv(65536)):
            out += data
    return out


def test_serve_creates_a_private_data_dir(served):
    _, data_dir, _ = served
    assert stat.S_IMODE(data_dir.stat().st_mode) == 0o700


@pytest.mark.parametrize("path", ["/v1/detect", "/v1/collections", "/v1/keys", "/v1/collections/bank/identify",
                                  "/v1/collections/bank/subjects/s-1/faces", "/v1/liveness/sessions/abc/frames"])
@pytest.mark.parametrize("key", [None, "fg_00000000_" + "A" * 43])
def test_unauthenticated_body_is_refused_before_it_is_read(served, path, key):
    url, _, _ = served
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    sent, answer = send_endless_chunked(url, path, headers)
    assert answer.startswith(b"HTTP/1.1 401"), (sent, answer[:200])
    assert sent < EARLY, f"the 401 came only after {sent / 2**20:.0f} MiB"
    assert re.search(rb"(?im)^connection: close", answer), answer[:400]


def test_public_routes_still_answer_without_a_key(served):
    url, _, admin = served
    with httpx.Client(base_url=url, timeout=10) as c:
        for path in ("/healthz", "/readyz", "/metrics", "/", "/static/app.js", "/docs", "/openapi.json", "/problems"):
            assert c.get(path).status_code == 200, path
        assert c.get("/v1/me", headers={"X-API-Key": admin}).json()["scopes"] == ["admin"]
