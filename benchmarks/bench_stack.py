"""What an idle local stack costs: CPU-seconds per minute of each component, doing nothing.

Every test session, the demo and the rehearsal keep one or more stacks up for minutes on a 2-core
machine; what they burn while waiting is CPU the work does not get. Measured in the same run:

* **value**: the stack as ``scripts/stack.py`` starts it (``[dag_processor]
  min_file_process_interval`` 180 s: an unchanged DAG file is parsed again every 3 minutes, a
  changed one at once);
* **reference**: the same stack with the interval at 10 s (what it was before: every DAG file
  parsed again all the time).

Each side: ``up`` on free ports in a fresh state folder, a warm-up (the first parse of every
file, the scheduler's start), then the CPU time (user + system, of each component's process
tree, exited children included) over the window, per minute. ``ratio`` = value / reference
(lower is better). The two sides run one after the other, alternating in full mode (median of
the repeats); CPU time, unlike wall time, hardly depends on what else the machine runs.
"""

from __future__ import annotations

import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

INTERVALS = {"value": "180", "reference": "10"}
WINDOW_S = {"full": 120.0, "quick": 45.0}
WARM_UP_S = 45.0
REPEATS = {"full": 2, "quick": 1}
HZ = os.sysconf("SC_CLK_TCK")


def _tree_cpu(pid: int) -> float:
    """CPU seconds of ``pid`` and its live descendants, plus the children they reaped."""
    children: dict[int, list[tuple[int, list[str]]]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            fields = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append((int(entry), fields))

    def total(fields: list[str], pid: int) -> float:
        own = sum(int(fields[i]) for i in (11, 12, 13, 14)) / HZ  # utime, stime, cutime, cstime
        return own + sum(total(f, p) for p, f in children.get(pid, []))

    return total(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split(), pid)


def _idle_cpu(interval: str, window: float) -> dict[str, float]:
    """CPU-s per minute of each component of an idle stack at that parse interval."""
    from scripts.stack import Stack, down, up

    previous = os.environ.get("AIRFLOW__DAG_PROCESSOR__MIN_FILE_PROCESS_INTERVAL")
    os.environ["AIRFLOW__DAG_PROCESSOR__MIN_FILE_PROCESS_INTERVAL"] = interval
    stack = Stack.on_free_ports(Path(tempfile.mkdtemp(prefix="bench-stack-")))
    try:
        up(stack)
        try:
            time.sleep(WARM_UP_S)
            pids = {name: int(stack.pid_file(name).read_text()) for name in stack.components}
            before = {name: _tree_cpu(pid) for name, pid in pids.items()}
            time.sleep(window)
            return {name: (_tree_cpu(pid) - before[name]) / window * 60 for name, pid in pids.items()}
        finally:
            down(stack)
    finally:
        if previous is None:
            os.environ.pop("AIRFLOW__DAG_PROCESSOR__MIN_FILE_PROCESS_INTERVAL", None)
        else:
            os.environ["AIRFLOW__DAG_PROCESSOR__MIN_FILE_PROCESS_INTERVAL"] = previous


def run(quick: bool = False) -> list[dict[str, Any]]:
    mode = "quick" if quick else "full"
    samples: dict[str, list[dict[str, float]]] = {"value": [], "reference": []}
    for i in range(REPEATS[mode]):
        order = ("reference", "value") if i % 2 == 0 else ("value", "reference")
        for side in order:
            samples[side].append(_idle_cpu(INTERVALS[side], WINDOW_S[mode]))
    components = sorted(samples["value"][0])
    rows = []
    for name in [*components, "total"]:
        per_side = {
            side: statistics.median(s[name] if name != "total" else sum(s.values()) for s in samples[side])
            for side in samples
        }
        rows.append(
            {
                "metric": f"idle stack CPU, {name}",
                "value": round(per_side["value"], 2),
                "unit": "CPU-s/min",
                "reference": round(per_side["reference"], 2),
                "ratio": round(per_side["value"] / per_side["reference"], 3) if per_side["reference"] else None,
                "note": f"min_file_process_interval {INTERVALS['value']} s vs {INTERVALS['reference']} s; "
                f"{WINDOW_S[mode]:.0f} s window after {WARM_UP_S:.0f} s warm-up, median of {REPEATS[mode]}",
            }
        )
    return rows
