"""Shared fixtures. The Airflow/MLflow environment is set before anything imports airflow.

Every test session gets its own state folder (AIRFLOW_HOME, SQLite DBs, data zones) and free
loopback ports, so the suite never touches a developer's running `make up` stack.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


if "RECSYS_TEST_SESSION_PID" in os.environ and os.environ["RECSYS_TEST_SESSION_PID"] == str(os.getpid()):
    # Imported a second time (``from tests.conftest import ...`` in a test module): that would make a
    # second state folder and point this process's Airflow at a DB nobody migrated.
    raise ImportError("tests/conftest.py imported twice: import helpers from scripts/ or tests/<module>, not conftest")
os.environ["RECSYS_TEST_SESSION_PID"] = str(os.getpid())
_STATE = Path(tempfile.mkdtemp(prefix="recsys-test-"))
# The session's stack (the configuration's ``stack`` section, overridden here): its own state
# folder and free ports, and the e2e tier's test-only DAGs (``tests/e2e/dags_extra/``) as a DAG
# bundle beside ``dags/`` (``make up`` never sees them).
os.environ["RECSYS__STACK__STATE_DIR"] = str(_STATE)
for _port in ("AIRFLOW", "MLFLOW", "SPARK_CONNECT", "SPARK_UI"):
    if "PYTEST_XDIST_WORKER" in os.environ:  # a worker of ``make test``: its own ports, not the controller's
        os.environ[f"RECSYS__STACK__{_port}_PORT"] = str(_free_port())
    else:
        os.environ.setdefault(f"RECSYS__STACK__{_port}_PORT", str(_free_port()))
os.environ["RECSYS__STACK__EXTRA_DAG_FOLDERS"] = json.dumps([str(REPO / "tests" / "e2e" / "dags_extra")])
os.environ["GX_ANALYTICS_ENABLED"] = "false"
# The figures this suite pins (hit-rates, NDCG, byte-equal recommendations across whole-loop runs)
# are CPU figures: training and scoring default to `auto`, which on a CUDA host would mean bf16
# autocast and a non-deterministic embedding backward. So the suite hides CUDA from itself and
# from every process it starts (jobs, Airflow tasks, the demo): `make test` passes on a GPU
# workstation, and the one test that runs on CUDA (``@pytest.mark.cuda``,
# tests/integration/test_cuda.py) hands the devices back explicitly.
# (An xdist worker inherits the hidden value: the original is kept in RECSYS_TEST_CUDA_DEVICES,
# "<unset>" when the user set none.)
os.environ.setdefault("RECSYS_TEST_CUDA_DEVICES", os.environ.get("CUDA_VISIBLE_DEVICES", "<unset>"))
os.environ["CUDA_VISIBLE_DEVICES"] = ""
os.environ["PYSPARK_PYTHON"] = sys.executable
sys.path[:0] = [str(REPO), str(REPO / "plugins")]

from scripts.recsys_api import AirflowApi  # noqa: E402
from scripts.stack import Stack  # noqa: E402

STACK = Stack.from_env()
os.environ.update(STACK.env())
# This process's own metadata DB, for dag.test() runs: not the live stack's. A dag.test() run
# in the live DB is a running DagRun the live scheduler also schedules once an earlier test
# (the browser's trigger form) unpaused that DAG — with the stack's environment, so a task ran
# against another test's model — and its asset events would trigger the live consumers.
# The stack's processes keep theirs (Stack.env() sets the connection for each of them).
DAG_TEST_DB = f"sqlite:///{STACK.airflow_home / 'dag-test.db'}"
os.environ["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"] = DAG_TEST_DB
# OpenLineage stays on in the stack's processes (Stack.env() sets it) but not in this one: in a
# dag.test() run its listener forks this process into a ProcessPoolExecutor for DAG-run events,
# and that worker is joined at interpreter exit — pytest never exits.
os.environ["AIRFLOW__OPENLINEAGE__DISABLED"] = "true"


@pytest.fixture(scope="session")
def stack():
    """The session's stack (state folder, ports) and its S3-compatible server (moto on loopback,
    bucket ``recsys-test``), started first: every component the stack starts — the Spark Connect
    server's Python workers above all — inherits the endpoint and keys (``AWS_*``), as a cluster's
    workers get them from their environment, whichever test starts the stack first."""
    from scripts import s3_service

    proc = s3_service.start(_free_port(), STACK.state / "logs" / "s3.log")
    os.environ.update(s3_service.env(int(proc.args[-1])))
    s3_service.create_bucket("recsys-test")
    yield STACK
    s3_service.stop(proc)


@pytest.fixture(scope="session")
def airflow_db(stack: Stack, spark_server: str) -> Stack:
    """This process's migrated metadata DB for ``dag.test()`` (``airflow db migrate``, once), and
    the Spark Connect server the DAGs' Spark tasks talk to.

    Apart from the live stack's DB: no live scheduler sees these runs or their asset events.
    """
    from scripts.stack import init

    init(stack, airflow_db=DAG_TEST_DB)
    # The ORM of this process may have been configured (and a connection pooled) before the
    # migration above: start it afresh on the migrated file, and say so plainly if it is not
    # the DB that was migrated (CI once saw "no such table: task_instance" here).
    from airflow import settings
    from sqlalchemy import inspect

    settings.dispose_orm()
    settings.configure_orm()
    url = settings.engine.url.render_as_string(hide_password=True)
    tables = set(inspect(settings.engine).get_table_names())
    assert settings.SQL_ALCHEMY_CONN == DAG_TEST_DB and {"dag_run", "task_instance"} <= tables, (
        f"dag.test() DB not migrated: settings {settings.SQL_ALCHEMY_CONN}, engine {url}, "
        f"expected {DAG_TEST_DB}; {len(tables)} tables"
    )
    return stack


@pytest.fixture
def data_root(tmp_path, monkeypatch) -> Path:
    """A fresh storage root for one test (RECSYS__STORAGE__ROOT)."""
    root = tmp_path / "data"
    monkeypatch.setenv("RECSYS__STORAGE__ROOT", str(root))
    return root


@pytest.fixture
def cfg(data_root):
    from jobs.core.config import get_config

    return get_config()


@pytest.fixture(scope="session")
def s3_server(stack: Stack) -> str:
    """The endpoint of the session's S3 server (started with ``stack``)."""
    return os.environ["AWS_ENDPOINT_URL"]


@pytest.fixture(scope="session")
def spark_server(stack: Stack, s3_server: str) -> str:
    """The session's Spark Connect server (local[2], on loopback): the one JVM of the suite's jobs.

    Jobs run by tests — in-process or as ``python -m jobs.X`` — reach it through
    ``RECSYS__SPARK__REMOTE`` (set from the stack above), as tasks of the live stack do.
    """
    from scripts.stack import up

    up(stack, only=("spark-connect",))
    return stack.spark_remote


@pytest.fixture(scope="session")
def spark(spark_server: str):
    """A Spark Connect session (with the jobs package as an artifact) shared by in-process tests."""
    from jobs.core.config import get_config
    from jobs.core.spark import connect

    session = connect(get_config(), "tests")
    yield session
    session.stop()


TIERS = ("unit", "integration", "e2e", "browser", "reliability")


# ``make test`` runs the suite in two pytest-xdist workers (``-n 2 --dist loadgroup``), one per
# group below; each worker has its own state folder, ports, servers and stacks. Most of the
# suite waits on servers (a clean-clone run used 0.6 of its 2 cores), so two lines of tests
# share the cores without slowing each other much. "loop": the two whole-loop runs (the local
# demo and the cluster rehearsal under chaos, which compares itself with it: one session
# fixture) and the reliability cases that need no live Airflow stack; "main": everything else,
# around the session's live stack. The two are about the same length.
LOOP_GROUP = ("tests/e2e/test_demo_loop.py", "tests/reliability/")
LOOP_GROUP_EXCEPT = ("tests/reliability/test_stack_faults.py",)  # needs the live stack of "main"


def xdist_group(nodeid: str) -> str:
    """The worker group of a test (see ``LOOP_GROUP``)."""
    path = nodeid.split("::", 1)[0]
    return "loop" if path.startswith(LOOP_GROUP) and not path.startswith(LOOP_GROUP_EXCEPT) else "main"


def pytest_xdist_make_scheduler(config, log):
    """``--dist loadgroup``: one worker per group of ``xdist_group`` (by path, no marks needed).

    xdist's own loadgroup reads ``xdist_group`` marks through a node id suffix it sets in a way
    pytest 9 no longer honours (``Item._nodeid``): every test became a group of its own."""
    if config.getvalue("dist") != "loadgroup":
        return None
    from xdist.scheduler import LoadScopeScheduling

    class PathGroups(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return xdist_group(nodeid)

    return PathGroups(config, log)


def pytest_collection_modifyitems(config, items):
    """Every test belongs to exactly one tier (its marker): a test without one would run in
    ``make test`` but in no tier of its own, and its time would be counted nowhere."""
    wrong = [
        f"{item.nodeid}: {tiers or 'no tier marker'}"
        for item in items
        if len(tiers := [m.name for m in item.iter_markers() if m.name in TIERS]) != 1
    ]
    if wrong:
        raise pytest.UsageError(
            "tests without exactly one tier marker (" + ", ".join(TIERS) + "):\n" + "\n".join(wrong)
        )


_TIER_SECONDS: dict[str, float] = {}
_TIER_TESTS: dict[str, set[str]] = {}
_SESSION_STARTED = time.monotonic()


def pytest_runtest_logreport(report):
    """Seconds per tier (setup + call + teardown; a session fixture counts in the first test that
    needs it), printed at the end of the run. Under xdist the controller gets every worker's
    reports, so the tiers add up the test time of both workers; the session's wall time is
    printed beside them."""
    tier = next((t for t in TIERS if t in report.keywords), "untiered")
    _TIER_SECONDS[tier] = _TIER_SECONDS.get(tier, 0.0) + report.duration
    _TIER_TESTS.setdefault(tier, set()).add(report.nodeid)


def pytest_terminal_summary(terminalreporter):
    if not _TIER_SECONDS:
        return
    terminalreporter.section("wall time per tier")
    for tier in (*TIERS, "untiered"):
        if tier in _TIER_SECONDS:
            terminalreporter.write_line(
                f"{tier:12s} {len(_TIER_TESTS[tier]):4d} tests {_TIER_SECONDS[tier] / 60:7.1f} min"
            )
    terminalreporter.write_line(
        f"{'total':12s} {sum(map(len, _TIER_TESTS.values())):4d} tests {sum(_TIER_SECONDS.values()) / 60:7.1f} min"
    )
    workers = getattr(terminalreporter.config.option, "numprocesses", None) or 0
    terminalreporter.write_line(
        f"{'wall':12s} {(time.monotonic() - _SESSION_STARTED) / 60:16.1f} min"
        + (f" ({workers} workers: the tier times above add up both)" if workers else "")
    )
    from tests.reliability.harness import REPORT

    if REPORT.cases:
        terminalreporter.section("reliability: faults injected and recovered")
        terminalreporter.write_line(REPORT.table())
        terminalreporter.write_line(f"report: {REPORT.path}")


def pytest_sessionfinish(session, exitstatus):
    """A worker hands its reliability cases to the controller (``pytest_testnodedown``)."""
    from scripts.stack import down

    workeroutput = getattr(session.config, "workeroutput", None)
    if workeroutput is not None:
        from tests.reliability.harness import REPORT

        workeroutput["reliability_cases"] = REPORT.dump()
    if STACK.running():
        down(STACK)
    shutil.rmtree(_STATE, ignore_errors=True)


def pytest_testnodedown(node, error):
    """The controller merges each worker's reliability cases into one report."""
    cases = getattr(node, "workeroutput", {}).get("reliability_cases")
    if cases:
        from tests.reliability.harness import REPORT

        REPORT.load(cases)


def run_module(
    module: str, *args: str, env: dict[str, str] | None = None, timeout: float = 600
) -> subprocess.CompletedProcess:
    """Run ``python -m module args`` like a task would; returns the completed process."""
    full_env = {**os.environ, **(env or {})}
    full_env["PYTHONPATH"] = os.pathsep.join([str(REPO), str(REPO / "plugins")])
    return subprocess.run(
        [sys.executable, "-m", module, *args], cwd=REPO, env=full_env, capture_output=True, text=True, timeout=timeout
    )


@pytest.fixture(scope="session")
def mlflow_server(stack: Stack) -> str:
    """A real MLflow tracking server on loopback (the stack's, started alone if needed)."""
    from scripts.stack import up

    up(stack, only=("mlflow",))
    return stack.mlflow_url


@pytest.fixture
def mlflow_env(mlflow_server, monkeypatch, tmp_path) -> str:
    """Point jobs at the test MLflow server with a model name unique to this test."""
    name = f"recsys-test-{tmp_path.name}"
    monkeypatch.setenv("RECSYS__MLFLOW__TRACKING_URI", mlflow_server)
    monkeypatch.setenv("RECSYS__MLFLOW__MODEL_NAME", name)
    monkeypatch.setenv("RECSYS__MLFLOW__EXPERIMENT", name)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server)
    return name


@pytest.fixture(scope="session")
def clean_demo(tmp_path_factory):
    """``scripts/demo.py`` on the small world of ``tests/demo_loop.py``, once per session, on its own stack.

    The e2e demo test checks its timeline and the reprocess that follows it; the reliability
    chaos run on the cluster rehearsal's shape compares its end state with this one's.
    """
    from tests.demo_loop import after_the_demo, run_demo

    # The end state (what the chaos run must match) is read first; then the same stack takes an
    # operator's reprocess backfill of three past days and a retraining rejected over REST
    # (both checked by the e2e demo test).
    return run_demo(tmp_path_factory.mktemp("clean-demo"), after=after_the_demo)


@pytest.fixture(scope="session")
def live_stack(stack: Stack) -> Stack:
    """The real local stack (api-server, scheduler, dag-processor, triggerer, MLflow) for e2e tests."""
    from scripts.stack import up

    up(stack)
    return stack


class AirflowClient(AirflowApi):
    """The operator client (scripts/recsys_api.py) plus waits used by tests."""

    def wait_for_runs(self, dag_id: str, run_ids: set[str] | None = None, timeout: float = 900) -> dict[str, str]:
        import time

        deadline = time.monotonic() + timeout
        states: dict[str, str] = {}
        while time.monotonic() < deadline:
            runs = self.runs(dag_id)
            states = {r["dag_run_id"]: r["state"] for r in runs if run_ids is None or r["dag_run_id"] in run_ids}
            done = all(s in ("success", "failed") for s in states.values())
            if states and (run_ids is None or set(states) == run_ids) and done:
                return states
            time.sleep(3)
        raise AssertionError(f"runs of {dag_id} not finished after {timeout}s: {states}")


@pytest.fixture(scope="session")
def admin_client(live_stack: Stack) -> AirflowClient:
    return AirflowClient(live_stack.airflow_url, "admin", live_stack.credentials()["admin"])
