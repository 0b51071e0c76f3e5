"""The idle-stack benchmark counts a component's whole process tree, exited children included
(the dag-processor parses each file in a child process that is gone by the time it is sampled)."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

from benchmarks.bench_stack import _tree_cpu

pytestmark = pytest.mark.unit

BUSY = "import time\nt = time.process_time()\nwhile time.process_time() - t < 0.6: pass"


def test_cpu_of_a_tree_counts_children_that_already_exited():
    parent = subprocess.Popen(["sh", "-c", f"sleep 1; {sys.executable} -c '{BUSY}'; sleep 30"])
    try:
        before = _tree_cpu(parent.pid)
        deadline = time.monotonic() + 30
        while _tree_cpu(parent.pid) - before < 0.5:  # the busy child ran and was reaped by sh
            assert time.monotonic() < deadline, "the busy child's CPU never reached its parent's count"
            time.sleep(0.1)
        assert _tree_cpu(parent.pid) - before < 5  # its own CPU, not the machine's
    finally:
        parent.kill()
        parent.wait()
