"""The chaos run's S3 outage proxy cuts exactly its target: the target's open connection and its
new ones are reset, another process's are forwarded (``tests/reliability/outages.py``)."""

from __future__ import annotations

import contextlib
import socket
import subprocess
import sys
import threading

import pytest

from tests.reliability.outages import OutageProxy

pytestmark = pytest.mark.unit

CLIENT = """
import socket, sys
s = socket.create_connection(("127.0.0.1", {port}))
s.sendall(b"hi"); print(s.recv(10).decode(), flush=True)
sys.stdin.readline()  # the test cuts this process meanwhile
for name, make in (("open", lambda: s), ("new", lambda: socket.create_connection(("127.0.0.1", {port})))):
    try:
        c = make(); c.sendall(b"x"); print(name, c.recv(10).decode() or "eof", flush=True)
    except OSError as exc:
        print(name, type(exc).__name__, flush=True)
"""


def _echo(conn: socket.socket) -> None:
    with contextlib.suppress(OSError):  # the proxy resets the upstream side of a cut connection
        while data := conn.recv(100):
            conn.sendall(data)


def _echo_server() -> int:
    server = socket.create_server(("127.0.0.1", 0))

    def serve() -> None:
        while True:
            conn, _ = server.accept()
            threading.Thread(target=_echo, args=(conn,), daemon=True).start()

    threading.Thread(target=serve, daemon=True).start()
    return server.getsockname()[1]


def test_an_outage_resets_its_target_and_forwards_everyone_else():
    proxy = OutageProxy(_echo_server())
    child = subprocess.Popen(
        [sys.executable, "-c", CLIENT.format(port=proxy.port)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        assert child.stdout.readline().strip() == "hi"  # forwarded before the outage
        mine = socket.create_connection(("127.0.0.1", proxy.port))
        assert proxy.cut(child.pid) == 1  # the child's open connection, not this process's
        child.stdin.write("go\n")
        child.stdin.flush()
        out = child.communicate(timeout=30)[0].split("\n")
        assert out[:2] == ["open ConnectionResetError", "new ConnectionResetError"], out
        mine.sendall(b"me")
        assert mine.recv(10) == b"me"
        assert proxy.cut_connections == 2
        proxy.restore()
        again = socket.create_connection(("127.0.0.1", proxy.port))
        again.sendall(b"up")
        assert again.recv(10) == b"up"
    finally:
        child.kill()
        proxy.close()
