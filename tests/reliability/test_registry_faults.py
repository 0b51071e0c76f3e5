"""The tracking server goes away in the middle of a registry operation, at every possible request.

A registry operation is a sequence of MLflow requests (tags on versions, aliases, the journal
entry of ``jobs.registry``). ``FlakyProxy`` sits between the client and a real MLflow server
and dies after exactly k requests of the operation — for the first, the last and a seeded
sample of the k between (every k with ``RECSYS_RELIABILITY_FULL=1``): either the k+1-th
request never reaches the server, or it is applied and its answer lost (seeded choice).
Then:

1. right after the failure the registry must hold no half state a reader could trust: the
   champion is the old or the new one (never anything else), and anything half-done is
   covered by the journal entry (``registry_problems(allow_pending=True)``);
2. recovery (seeded): the same operation retried — the registry must then equal a clean run's
   (tags, aliases; timestamps aside) — or a different operation first (an operator's rollback
   after a failed promotion; a promotion after a failed rollback), after which the registry
   must be consistent and the original operation's retry be judged against the new state;
3. registration: the version is registered exactly once, whichever request was lost.

Models are tiny fixed rankers logged once; each k works on its own registered model name.
"""

from __future__ import annotations

import os
import time

import mlflow
import pytest
from mlflow.exceptions import MlflowException

from jobs.core.config import load_config
from jobs.core.tracking import CHALLENGER, CHAMPION, PREVIOUS, client
from jobs.registry.aliases import RegistryError, promote, rollback
from jobs.registry.register import register
from tests.pyfuncs import FixedRanker
from tests.reliability.harness import (
    CaseResult,
    FaultInjector,
    FlakyProxy,
    journal_state,
    normalised,
    registry_problems,
    registry_state,
)

pytestmark = pytest.mark.reliability

SAMPLE = 7  # cut points per operation (see cut_points)


@pytest.fixture
def setup(tracking, monkeypatch):
    """(direct config, proxied config, proxy, logged models [(run_id, model_uri)] × 4)."""
    import os

    direct = load_config(environ=dict(os.environ))
    proxy = FlakyProxy(direct.mlflow.tracking_uri)
    proxied = load_config(environ={**os.environ, "RECSYS__MLFLOW__TRACKING_URI": proxy.url})
    mlflow.set_tracking_uri(direct.mlflow.tracking_uri)
    mlflow.set_experiment(direct.mlflow.experiment)
    models = []
    for items in ([1, 2], [3, 4], [5, 6], [7, 8]):
        with mlflow.start_run() as run:
            info = mlflow.pyfunc.log_model(name="model", python_model=FixedRanker(items), pip_requirements=["mlflow"])
        models.append((run.info.run_id, info.model_uri))
    yield direct, proxied, proxy, models
    proxy.close()


def _register(cfg, models, i: int, name: str) -> str:
    run_id, uri = models[i]
    return register(cfg, run_id, {"decision": "blessed", "decision_reason": f"gate run {i}"}, uri, name)["version"]


def _two_champions(cfg, models, name: str) -> tuple[str, str, str]:
    """v0 promoted, then v1 promoted over it (previous v0); v2 registered as challenger."""
    v0 = _register(cfg, models, 0, name)
    promote(cfg, v0, None, "first model", "setup", name)
    v1 = _register(cfg, models, 1, name)
    promote(cfg, v1, v0, "better than v0", "setup", name)
    v2 = _register(cfg, models, 2, name)
    return v0, v1, v2


def cut_points(n: int, seed: int) -> list[int]:
    """Where the server dies: the first and last request and a seeded sample between.

    ``RECSYS_RELIABILITY_FULL=1`` cuts at every request (about 25 per promotion; minutes).
    """
    if os.environ.get("RECSYS_RELIABILITY_FULL") == "1" or n <= SAMPLE:
        return list(range(n))
    inner = FaultInjector(seed, max_faults=0).rng.sample(range(1, n - 1), SAMPLE - 2)
    return [0, *sorted(inner), n - 1]


def _requests(proxy: FlakyProxy, action) -> int:
    before = len(proxy.log)
    action()
    return len(proxy.log) - before


def _record(report, case: str, test: str, faults: int, recovered: int, started: float, **details) -> None:
    report.record(
        CaseResult(case, test, faults, recovered, seconds=round(time.monotonic() - started, 1), details=details)
    )


def test_promotion_interrupted_at_every_request(setup, tracking, report):
    direct, proxied, proxy, models = setup
    cl = client(direct)
    started = time.monotonic()
    reason, actor = "blessed: ndcg@10 0.31 vs champion 0.30", "recsys_train/run-1"
    ref = f"{tracking}-ref"
    _, v1, v2 = _two_champions(direct, models, ref)
    n = _requests(proxy, lambda: promote(proxied, v2, v1, reason, actor, ref))
    reference = normalised(registry_state(cl, ref))
    assert reference["aliases"] == {CHAMPION: v2, PREVIOUS: v1, CHALLENGER: v2}
    outcomes = []
    for k in cut_points(n, seed=1):
        inj = FaultInjector(seed=100 + k, max_faults=1)
        name = f"{tracking}-p{k}"
        v0, v1, v2 = _two_champions(direct, models, name)
        after_forward = inj.pick([False, True])
        proxy.cut_after(k, after_forward=after_forward)
        with pytest.raises(MlflowException):
            promote(proxied, v2, v1, reason, actor, name)
        inj.record("tracking server gone", f"promote request {k + 1}/{n}", after_forward=after_forward)
        proxy.restore()
        mid = registry_state(cl, name)
        assert mid["aliases"][CHAMPION] in (v1, v2), (k, mid["aliases"])
        assert registry_problems(mid, allow_pending=True) == [], (k, mid)
        recovery = inj.pick(["retry", "rollback first"])
        if recovery == "retry":
            promote(proxied, v2, v1, reason, actor, name)
            final = registry_state(cl, name)
            assert normalised(final) == reference, k
        else:
            committed = mid["aliases"][CHAMPION] == v2
            rollback(proxied, "online metrics dropped", "oncall", name)
            final = registry_state(cl, name)
            if committed:  # the promotion had happened: roll it back
                assert final["aliases"][CHAMPION] == v1 and final["aliases"][PREVIOUS] == v2, (k, final)
            else:  # the promotion never happened: its traces are undone, v1 is rolled back to v0
                assert final["aliases"][CHAMPION] == v0 and final["aliases"][PREVIOUS] == v1, (k, final)
                assert final["versions"][v2]["tags"]["decision"] == "blessed", (k, final)
                if journal_state(mid) == "pending":
                    assert "interrupted_promote" in final["versions"][v2]["tags"], (k, final)
                with pytest.raises(RegistryError, match="re-run the evaluation"):
                    promote(proxied, v2, v1, reason, actor, name)  # Airflow's retry of the failed task
        assert registry_problems(registry_state(cl, name)) == [], (k, registry_state(cl, name))
        versions = registry_state(cl, name)["versions"]
        assert len(versions) == 3
        outcomes.append({"cut_after": k, "after_forward": after_forward, "recovery": recovery})
    _record(
        report,
        "registry: outage during promote",
        "test_promotion_interrupted_at_every_request",
        len(outcomes),
        len(outcomes),
        started,
        requests_per_promotion=n,
        cuts=outcomes,
    )


def test_rollback_interrupted_at_every_request(setup, tracking, report):
    direct, proxied, proxy, models = setup
    cl = client(direct)
    started = time.monotonic()
    ref = f"{tracking}-ref"
    _, v1, _ = _two_champions(direct, models, ref)
    n = _requests(proxy, lambda: rollback(proxied, "bad online metrics", "oncall", ref))
    reference = normalised(registry_state(cl, ref))
    outcomes = []
    for k in cut_points(n, seed=2):
        inj = FaultInjector(seed=200 + k, max_faults=1)
        name = f"{tracking}-r{k}"
        v0, v1, v2 = _two_champions(direct, models, name)
        after_forward = inj.pick([False, True])
        proxy.cut_after(k, after_forward=after_forward)
        with pytest.raises(MlflowException):
            rollback(proxied, "bad online metrics", "oncall", name)
        inj.record("tracking server gone", f"rollback request {k + 1}/{n}", after_forward=after_forward)
        proxy.restore()
        mid = registry_state(cl, name)
        assert mid["aliases"][CHAMPION] in (v0, v1), (k, mid["aliases"])
        assert registry_problems(mid, allow_pending=True) == [], (k, mid)
        recovery = inj.pick(["retry", "promotion first"])
        if recovery == "retry":
            rollback(proxied, "bad online metrics", "oncall", name)
            assert normalised(registry_state(cl, name)) == reference, k
        else:
            committed = mid["aliases"][CHAMPION] == v0
            if committed:  # the rollback happened: a promotion evaluated against v1 is stale
                with pytest.raises(RegistryError, match="re-run the evaluation"):
                    promote(proxied, v2, v1, "blessed", "recsys_train/run-2", name)
                assert registry_state(cl, name)["aliases"][CHAMPION] == v0
            else:  # the rollback never happened: undone, the promotion goes ahead
                promote(proxied, v2, v1, "blessed", "recsys_train/run-2", name)
                final = registry_state(cl, name)
                assert final["aliases"][CHAMPION] == v2 and final["aliases"][PREVIOUS] == v1, (k, final)
        assert registry_problems(registry_state(cl, name)) == [], (k, registry_state(cl, name))
        outcomes.append({"cut_after": k, "after_forward": after_forward, "recovery": recovery})
    _record(
        report,
        "registry: outage during rollback",
        "test_rollback_interrupted_at_every_request",
        len(outcomes),
        len(outcomes),
        started,
        requests_per_rollback=n,
        cuts=outcomes,
    )


def test_registration_interrupted_at_every_request_registers_once(setup, tracking, report):
    direct, proxied, proxy, models = setup
    cl = client(direct)
    started = time.monotonic()
    run_id, uri = models[3]
    tags = {"decision": "blessed", "window_start": "2026-06-01", "window_end": "2026-06-03"}
    ref = f"{tracking}-ref"
    register(proxied, run_id, tags, uri, ref)
    reference = normalised(registry_state(cl, ref))
    # Requests of a registration once this process's client caches are warm (the first
    # registration of a run also resolves where its artifacts live, once): what every cut
    # registration below makes.
    n = _requests(proxy, lambda: register(proxied, run_id, tags, uri, f"{tracking}-warm"))
    outcomes = []
    for k in cut_points(n, seed=3):
        inj = FaultInjector(seed=300 + k, max_faults=1)
        name = f"{tracking}-g{k}"
        after_forward = inj.pick([False, True])
        proxy.cut_after(k, after_forward=after_forward)
        with pytest.raises(MlflowException):
            register(proxied, run_id, tags, uri, name)
        inj.record("tracking server gone", f"register request {k + 1}/{n}", after_forward=after_forward)
        proxy.restore()
        out = register(proxied, run_id, tags, uri, name)  # Airflow's retry
        state = registry_state(cl, name)
        assert list(state["versions"]) == [out["version"]] == ["1"], (k, state)
        assert normalised(state) == reference, k
        assert registry_problems(state) == []
        outcomes.append({"cut_after": k, "after_forward": after_forward, "reused": out["reused"]})
    _record(
        report,
        "registry: outage during register",
        "test_registration_interrupted_at_every_request_registers_once",
        len(outcomes),
        len(outcomes),
        started,
        requests_per_registration=n,
        cuts=outcomes,
    )
