"""``JobOperator.on_kill`` (what Airflow calls when an operator marks a running task failed, or
the task times out): the job's process group is stopped and its Spark Connect session is
interrupted on the server, so a killed task leaves no Spark job running behind it.

A killed pod on a lost node sends nothing: the server still sees the connection open and the
operation runs on. The job here talks to the server through a proxy that behaves like that lost
node (when the client side closes, the server side stays open), so only the launcher's interrupt
can stop the Spark job within the bound: without it the job still ran after 20 s (checked by
removing the interrupt from ``on_kill``).
"""

from __future__ import annotations

import contextlib
import os
import socket
import threading
import time

import pytest

pytestmark = pytest.mark.integration


class HalfOpenProxy:
    """A TCP proxy to ``upstream`` that never closes an upstream connection by itself."""

    def __init__(self, upstream: tuple[str, int]) -> None:
        self.upstream = upstream
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.held: list[socket.socket] = []
        self._stop = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self._stop:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            server = socket.create_connection(self.upstream)
            self.held += [client, server]
            threading.Thread(target=self._pump, args=(client, server), daemon=True).start()
            threading.Thread(target=self._pump, args=(server, client), daemon=True).start()

    @staticmethod
    def _pump(src: socket.socket, dst: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := src.recv(65536):
                dst.sendall(data)
        # the source closed: forward nothing, close nothing (a lost node sends no FIN)

    def close(self) -> None:
        self._stop = True
        for sock in [self.listener, *self.held]:
            with contextlib.suppress(OSError):
                sock.close()


def test_on_kill_stops_the_job_and_interrupts_its_spark_session(stack, spark_server, monkeypatch):
    from recsys_airflow.launcher import JobOperator
    from scripts.spark_service import running_jobs
    from tests.reliability.harness import wait_until

    proxy = HalfOpenProxy(("127.0.0.1", stack.connect_port))
    op = JobOperator(task_id="slow", module="tests.slow_spark_job", spark=True)
    outcome: dict = {}

    def execute():
        try:
            outcome["result"] = op.execute({})
        except Exception as exc:  # the killed job's failure, inspected below
            outcome["error"] = exc

    before = set(running_jobs(stack.spark_ui_port))
    try:
        with monkeypatch.context() as m:  # the job (only) reaches the server through the proxy
            m.setenv("RECSYS__SPARK__REMOTE", f"sc://127.0.0.1:{proxy.port}")
            runner = threading.Thread(target=execute, daemon=True)
            runner.start()
            new = lambda: [j for j in running_jobs(stack.spark_ui_port) if j not in before]  # noqa: E731
            wait_until(new, 180, 0.5, "the job's Spark job running on the server")
            time.sleep(3)  # past the session's short setup jobs: the long count runs
            mine = wait_until(new, 60, 0.5, "the job's long Spark job running on the server")
        assert op._session_id and op._proc is not None and op._proc.poll() is None

        op.on_kill()

        runner.join(60)
        assert not runner.is_alive()
        assert "killed by SIGTERM" in str(outcome.get("error")), outcome  # retried by Airflow, never fail-fast
        with pytest.raises(ProcessLookupError):  # the whole process group is gone
            os.killpg(op._proc.pid, 0)
        wait_until(
            lambda: not new(),
            20,
            0.5,
            f"Spark job(s) {sorted(mine)} of the killed task's session stopped on the server",
        )
    finally:
        proxy.close()
