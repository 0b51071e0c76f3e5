"""``make status`` counts the Spark Connect server's open files and warns near its limit."""

from __future__ import annotations

import os
import resource
import socket

import pytest

from scripts import spark_service

pytestmark = pytest.mark.unit


def test_open_files_counts_descriptors_and_sockets_against_the_soft_limit():
    before = spark_service.open_files(os.getpid())
    with socket.socket() as a, socket.socket() as b:
        during = spark_service.open_files(os.getpid())
        assert a.fileno() > 0 and b.fileno() > 0
    assert during["sockets"] == before["sockets"] + 2 and during["open"] == before["open"] + 2
    assert during["limit"] == resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    assert spark_service.open_files(2**22 + 12345) is None  # no such process


def test_the_status_line_warns_only_near_the_limit(monkeypatch):
    counts = {"open": 40, "sockets": 22, "limit": 20000}
    monkeypatch.setattr(spark_service, "open_files", lambda pid: counts)
    assert spark_service.files_line(1) == "open files 40 (22 sockets) of 20000"
    counts["open"] = 10_000
    assert "WARNING: near the limit; restart it between runs (make down && make up)" in spark_service.files_line(1)
