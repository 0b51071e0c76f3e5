"""Training → evaluation → registration → promotion while the trainer and the tracking server die.

One chain on the session world's real training snapshot, driven through the job CLIs the DAG
runs (``jobs.train``, ``jobs.evaluate``, ``jobs.registry``) against a private MLflow server:

1. the trainer is SIGKILLed in the middle of a (seeded) epoch;
2. its retry loses the tracking server (SIGKILL of the server and its workers) a (seeded)
   epoch after resuming: the job fails with an error naming the server, its checkpoint kept;
3. the server is restarted on the same store; the next retry resumes from the checkpoint,
   continues the same MLflow run and logs every epoch exactly once;
4. evaluation, registration, infra validation and promotion (CLIs) each meet a frozen server
   (SIGSTOP: requests time out) — exit 1 (retried) with one line naming the server, no
   traceback, the registry untouched — and pass once it thaws (the gate blesses the model); a retried registration and a retried (already
   finished) training re-use what exists: **one** registered version;
5. retraining on unchanged data (a new Airflow run: a new MLflow run, bitwise the same model)
   registers a new challenger; with a gate it does not pass, ``champion`` stays; with the
   normal gate it is promoted over the champion; never two champions, no half-promoted state.

The registry is checked with ``registry_problems`` after every step (aliases on tagged
versions, previous-champion bookkeeping, one serving ``promoted`` version, no journal entry).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from tests.reliability.harness import (
    REPO,
    CaseResult,
    FaultInjector,
    crash_tree,
    job_env,
    registry_problems,
    registry_state,
    wait_until,
)

pytestmark = pytest.mark.reliability

EPOCHS = 8
HPARAMS = [
    *("--epochs", str(EPOCHS), "--batch-size", "32", "--factors", "16", "--lr", "0.01"),
    *("--weight-decay", "0.01", "--negatives", "4", "--seed", "3", "--device", "cpu"),
]


class Job:
    """A job CLI as a process whose stderr/stdout lines are collected as they come."""

    def __init__(self, module: str, *args: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", module, *args],
            cwd=REPO,
            env=job_env(RECSYS_XCOM_DIR="/nonexistent-xcom"),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))

    def saw(self, text: str) -> bool:
        return any(text in line for line in self.lines)

    def wait(self, timeout: float = 600) -> int:
        code = self.proc.wait(timeout)
        self._reader.join(10)
        return code

    @property
    def output(self) -> str:
        return "\n".join(self.lines)


def _train(snapshot: str, ckpt: Path, result: Path, run_name: str, *extra: str) -> Job:
    return Job(
        "jobs.train",
        *("--snapshot", snapshot, "--checkpoint-dir", str(ckpt), "--result-file", str(result)),
        *("--run-name", run_name),
        *HPARAMS,
        *extra,
    )


def _checkpoint_epoch(ckpt: Path) -> int:
    import torch

    return int(torch.load(ckpt / "checkpoint.pt", map_location="cpu", weights_only=True)["epoch"])


def _run_cli(module: str, *args: str, timeout: float = 600) -> tuple[int, str, float]:
    started = time.monotonic()
    job = Job(module, *args)
    code = job.wait(timeout)
    return code, job.output, time.monotonic() - started


def _frozen_run(
    server, inj: FaultInjector, failures: dict, module: str, args: tuple[str, ...], result: Path, step: str = ""
) -> None:
    """``module`` (its ``step``, for ``jobs.registry``) against a frozen tracking server: exit 1
    (retried, not fail-fast) and one message naming the server, on stderr and in the result
    file; no traceback. ``failures[step or module]`` records how long it took and what it said."""
    server.freeze()
    inj.record("tracking server frozen", "mlflow server", during=f"{module} {step}".strip())
    try:
        code, out, seconds = _run_cli(module, *args, "--result-file", str(result))
    finally:
        server.thaw()
    assert code == 1, out[-2000:]
    message = json.loads(result.read_text())["message"]
    assert f"request to the MLflow tracking server {server.url} failed" in message, message
    assert message.splitlines()[0] in out and "Traceback" not in out, out[-2000:]
    failures[step or module] = {"seconds": round(seconds, 1), "message": message[:160]}


def _assert_consistent(cl, name: str) -> dict:
    state = registry_state(cl, name)
    assert registry_problems(state) == [], state
    return state


def test_training_chain_survives_trainer_and_tracking_server_crashes(world, tracking, private_mlflow, tmp_path, report):
    from jobs.core.config import get_config, load_config
    from jobs.core.tracking import CHALLENGER, CHAMPION, PREVIOUS, client
    from jobs.evaluate.gate import evaluate
    from jobs.registry.aliases import promote
    from jobs.registry.register import register

    started = time.monotonic()
    inj = FaultInjector(seed=7, max_faults=6, max_seconds=900)
    cfg = get_config()
    name = cfg.mlflow.model_name
    ckpt = Path(cfg.storage.zone("checkpoints")) / "recsys_train__manual_1"
    result_file = tmp_path / "train.json"

    # 1. the trainer dies mid-epoch
    kill_epoch = inj.pick([1, 2, 3])
    job = _train(world.snapshot_uri, ckpt, result_file, "recsys_train__manual_1")
    wait_until(lambda: job.saw(f"epoch {kill_epoch}/{EPOCHS}") or job.proc.poll() is not None, 300, what="an epoch")
    assert job.proc.poll() is None, job.output[-3000:]
    time.sleep(inj.uniform(0.02, 0.15))
    crash_tree(job.proc.pid)
    inj.record("sigkill", "jobs.train", after_epoch=kill_epoch)
    assert job.wait() == -9
    killed_at = _checkpoint_epoch(ckpt)
    assert kill_epoch <= killed_at < EPOCHS and not result_file.exists()
    import torch

    run_id = torch.load(ckpt / "checkpoint.pt", map_location="cpu", weights_only=True)["run_id"]

    # 2. the retry resumes, then the tracking server dies under it
    job = _train(world.snapshot_uri, ckpt, result_file, "recsys_train__manual_1")
    wait_until(lambda: job.saw(f"epoch {killed_at + 1}/{EPOCHS}") or job.proc.poll() is not None, 300)
    assert job.saw(f"resuming from {ckpt / 'checkpoint.pt'} at epoch {killed_at}"), job.output[-3000:]
    private_mlflow.kill()
    inj.record("tracking server killed", "mlflow server", during="jobs.train", after_epoch=killed_at + 1)
    code = job.wait()
    # exit 1 (retried), one line naming the server, also in the result file the task reads
    assert code == 1, job.output[-3000:]
    errors = [
        ln
        for ln in job.lines
        if ln.startswith(f"training failed: request to the MLflow tracking server {private_mlflow.url}")
    ]
    assert errors, job.output[-3000:]
    assert json.loads(result_file.read_text())["message"].startswith("training failed: request to the MLflow")
    assert "run_id" not in json.loads(result_file.read_text())
    outage_at = _checkpoint_epoch(ckpt)
    assert outage_at > killed_at

    # 3. the server returns on the same store; the next retry finishes the same run
    private_mlflow.start()
    job = _train(world.snapshot_uri, ckpt, result_file, "recsys_train__manual_1")
    assert job.wait() == 0, job.output[-3000:]
    assert job.saw(f"resuming from {ckpt / 'checkpoint.pt'} at epoch {outage_at}")
    trained = json.loads(result_file.read_text())
    assert trained["run_id"] == run_id and trained["epochs_done"] == EPOCHS
    cl = client(cfg)
    steps = sorted(m.step for m in cl.get_metric_history(run_id, "loss"))
    assert steps == list(range(1, EPOCHS + 1)), steps

    # 4. the gate, then registration, infra validation and promotion, each first against a
    #    frozen server (exit 1 = retried, one line naming the server), then for real
    eval_file = tmp_path / "evaluate.json"
    eval_args = ("gate", "--snapshot", world.snapshot_uri, "--run-id", run_id, "--model-uri", trained["model_uri"])
    failures = {}
    _frozen_run(private_mlflow, inj, failures, "jobs.evaluate", eval_args, eval_file)
    code, out, _ = _run_cli("jobs.evaluate", *eval_args, "--result-file", str(eval_file))
    assert code == 0, out[-3000:]
    gate = json.loads(eval_file.read_text())
    assert gate["blessed"] is True and gate["champion_version"] is None, gate["reason"]
    tags = json.dumps({"decision": "blessed", "decision_reason": gate["reason"], "airflow_run_id": "manual_1"})
    register_args = ("register", "--run-id", run_id, "--model-uri", trained["model_uri"], "--tags", tags)
    for step, args in (
        ("register", register_args),
        (
            "promote",
            ("promote", "--model-version", "1", "--reason", gate["reason"], "--actor", "recsys_train/manual_1"),
        ),
    ):
        _frozen_run(private_mlflow, inj, failures, "jobs.registry", args, tmp_path / f"{step}.json", step)
        if step == "register":
            assert not _model_exists(cl, name) or registry_state(cl, name)["versions"] == {}
        else:
            assert CHAMPION not in registry_state(cl, name)["aliases"]
        code, out, _ = _run_cli("jobs.registry", *args, "--result-file", str(tmp_path / f"{step}.json"))
        assert code == 0, out[-2000:]
        if step == "register":
            smoke_args = ("infra", "--model-uri", f"models:/{name}/1", "--snapshot", world.snapshot_uri)
            smoke_file = tmp_path / "infra_validate.json"
            _frozen_run(private_mlflow, inj, failures, "jobs.evaluate", smoke_args, smoke_file)
            code, out, _ = _run_cli("jobs.evaluate", *smoke_args, "--result-file", str(smoke_file))
            assert code == 0, out[-2000:]
    again = register(cfg, run_id, {"decision": "blessed"}, trained["model_uri"])  # a retried register task
    assert {k: again[k] for k in ("name", "version", "model_uri", "reused")} == {
        "name": name,
        "version": "1",
        "model_uri": f"models:/{name}/1",
        "reused": True,
    }
    assert again["tags"]["decision"] == "promoted"  # the version's tags as they are, not re-written
    # A cleared train task: the registered version carries its cache key, so nothing is trained.
    job = _train(world.snapshot_uri, ckpt, result_file, "recsys_train__manual_1")
    assert job.wait() == 0 and job.saw("cached: version 1 has this cache key"), job.output[-2000:]
    cached = json.loads(result_file.read_text())
    assert cached["cached"] is True and (cached["cached_version"], cached["run_id"]) == ("1", run_id), cached
    state = _assert_consistent(cl, name)
    assert list(state["versions"]) == ["1"] and state["aliases"] == {CHAMPION: "1", CHALLENGER: "1"}
    report.record(
        CaseResult(
            "training: trainer + tracking crashes",
            "test_training_chain_survives_trainer_and_tracking_server_crashes",
            faults_injected=len(inj.faults),
            runs_recovered=len(inj.faults),
            seconds=round(time.monotonic() - started, 1),
            details={
                "faults": [f.__dict__ for f in inj.faults],
                "registered_versions": len(state["versions"]),
                "outage_errors": failures,
                "trainer_error": errors[-1][:200],
                "checkpoint_epochs": {"after_kill": killed_at, "after_outage": outage_at},
            },
        )
    )

    # 5. retraining on unchanged data (forced past the cache, which would otherwise answer with
    # version 1): a new challenger; champion moves only through the gate
    started = time.monotonic()
    ckpt2 = Path(cfg.storage.zone("checkpoints")) / "recsys_train__manual_2"
    job = _train(world.snapshot_uri, ckpt2, tmp_path / "train2.json", "recsys_train__manual_2", "--force-retrain=true")
    assert job.wait() == 0, job.output[-3000:]
    retrained = json.loads((tmp_path / "train2.json").read_text())
    assert retrained["run_id"] != run_id
    assert retrained["metrics"]["ndcg_at_10"] == trained["metrics"]["ndcg_at_10"]  # same data, same seed
    strict = load_config(environ={**os.environ, "RECSYS__GATE__MIN_USERS": "1000000"})
    refused = evaluate(strict, world.snapshot_uri, retrained["run_id"], retrained["model_uri"])
    assert refused["blessed"] is False and refused["champion_version"] == "1"
    assert "insufficient evidence" in refused["reason"], refused["reason"]
    v2 = register(cfg, retrained["run_id"], {"decision": "not_blessed", "decision_reason": refused["reason"]})
    assert v2["version"] == "2" and v2["reused"] is False
    state = _assert_consistent(cl, name)
    assert state["aliases"] == {CHAMPION: "1", CHALLENGER: "2"}  # the DAG stops before promote
    assert state["versions"]["2"]["tags"]["decision"] == "not_blessed"
    blessed = evaluate(cfg, world.snapshot_uri, retrained["run_id"], retrained["model_uri"])
    assert blessed["blessed"] is True and blessed["champion_version"] == "1", blessed["reason"]
    moved = promote(cfg, "2", blessed["champion_version"], blessed["reason"], "recsys_train/manual_3")
    assert moved["promoted"] is True and moved["previous"] == "1"
    state = _assert_consistent(cl, name)
    assert state["aliases"] == {CHAMPION: "2", CHALLENGER: "2", PREVIOUS: "1"}
    champions = [v for v, i in state["versions"].items() if i["tags"].get("decision") == "promoted"]
    assert [v for v in champions if "replaced_by" not in state["versions"][v]["tags"]] == ["2"]
    report.record(
        CaseResult(
            "training: retrain on unchanged data",
            "test_training_chain_survives_trainer_and_tracking_server_crashes",
            faults_injected=0,  # no fault: the gate's path on unchanged data, forced past the cache
            runs_recovered=0,
            seconds=round(time.monotonic() - started, 1),
            details={"versions": len(state["versions"]), "champion": "2", "refused_by_strict_gate": "2"},
        )
    )


def _model_exists(cl, name: str) -> bool:
    from mlflow.exceptions import MlflowException

    try:
        cl.get_registered_model(name)
    except MlflowException:
        return False
    return True
