"""A real redis-server with the module on a free port, for the client tests.

The module: $RECSYS_MODULE, else the workspace's target/release/librecsys.so.
The server: $RECSYS_REDIS_SERVER, else redis-server on the PATH.
"""

import os
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import pytest
import redis

ROOT = Path(__file__).resolve().parents[3]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_server(port: int, proc: subprocess.Popen) -> None:
    """Waits until the server on `port` answers PING (20 s at most)."""
    deadline = time.time() + 20
    while True:
        try:
            redis.Redis(port=port).ping()
            return
        except (redis.ConnectionError, OSError):
            if proc.poll() is not None or time.time() > deadline:
                raise RuntimeError(f"redis-server on port {port} did not start")
            time.sleep(0.05)


@pytest.fixture(scope="session")
def server():
    module = os.environ.get("RECSYS_MODULE") or str(ROOT / "target/release/librecsys.so")
    binary = os.environ.get("RECSYS_REDIS_SERVER") or "redis-server"
    port = _free_port()
    with tempfile.TemporaryDirectory() as d:
        proc = subprocess.Popen(
            [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--dir", d,
             "--loadmodule", module],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            wait_for_server(port, proc)
            yield port
        finally:
            proc.kill()
            proc.wait()


@pytest.fixture(params=[(2, False), (2, True), (3, False), (3, True)], ids=["resp2", "resp2-decoded", "resp3", "resp3-decoded"])
def client(request, server):
    protocol, decode = request.param
    r = redis.Redis(port=server, protocol=protocol, decode_responses=decode)
    r.flushall()
    yield r
    r.close()
