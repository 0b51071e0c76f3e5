"""The REST examples of docs/rest.md, run literally against the live stack, and typed trigger params.

The ``curl`` blocks and the Python ``requests`` block of docs/rest.md ("Operating over REST") are
extracted by their ``<!-- rest-example: NAME -->`` markers and executed as written; only the
address (``http://127.0.0.1:28080``) and the password file (``.local/airflow/passwords.json``)
are replaced by this session's. The world is tiny: three generated days (2026-01-05 … 07) that
the page's backfill ingests through the real scheduler, then the page's training trigger
trains on two of them and evaluates on the third.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from datetime import date
from pathlib import Path

import pytest
import requests

from jobs import sim as gen
from jobs.core import storage
from jobs.core.catalog import is_validated
from jobs.core.config import get_config

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]
README_URL = "http://127.0.0.1:28080"
README_PASSWORDS = ".local/airflow/passwords.json"
DAYS = ["2026-01-05", "2026-01-06", "2026-01-07"]
# Small enough for a 2-core machine, large enough for the training gate to have signal.
TINY_WORLD = gen.WorldParams(users=300, items=120, factors=4, seed=17, events_per_day=3000)
EXAMPLE = re.compile(r"<!-- rest-example: (?P<name>[\w-]+) -->\s*```(?P<lang>\w+)\n(?P<code>.*?)```", re.S)
CURL_STEPS = ["token", "backfill", "trigger", "poll", "asset-event"]


def readme_examples() -> dict[str, tuple[str, str]]:
    """``name → (language, code)`` of every marked example in docs/rest.md, in order."""
    text = (REPO / "docs" / "rest.md").read_text()
    return {m["name"]: (m["lang"], m["code"]) for m in EXAMPLE.finditer(text)}


def localise(code: str, stack) -> str:
    """The example as it would run against this session's stack (address and password file)."""
    assert README_URL in code or README_PASSWORDS in code or "$AIRFLOW_URL" in code, code[:200]
    return code.replace(README_URL, stack.airflow_url).replace(README_PASSWORDS, str(stack.passwords_file))


def generate_tiny_days(cfg) -> None:
    gen.generate(TINY_WORLD, date(2026, 1, 5), len(DAYS), cfg.storage.zone("landing"), cfg.storage.zone("ground_truth"))


def _session_env() -> dict[str, str]:
    return {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}


@pytest.fixture(scope="module")
def curl_run(live_stack, admin_client, tmp_path_factory) -> dict[str, str]:
    """Run the page's curl blocks in order in one bash, as a user pasting them would."""
    examples = readme_examples()
    assert [n for n in examples if examples[n][0] == "bash"] == CURL_STEPS, list(examples)
    cfg = get_config()
    generate_tiny_days(cfg)
    for dag_id in ("recsys_ingest", "recsys_train"):
        admin_client.wait_for_dag(dag_id)
    admin_client.wait_backfills_idle("recsys_ingest", timeout=900)
    script = ["set -euo pipefail"]
    for name in CURL_STEPS:
        script += [f"printf '\\n@@@ %s\\n' {name}", localise(examples[name][1], live_stack)]
    script.append(
        'printf \'\\n@@@ vars\\n{"BACKFILL_ID": "%s", "RUN_ID": "%s", "ASSET_ID": "%s"}\\n\' "$BACKFILL_ID" "$RUN_ID" "$ASSET_ID"'
    )
    workdir = tmp_path_factory.mktemp("readme-curl")
    (workdir / "examples.sh").write_text("\n".join(script) + "\n")
    proc = subprocess.run(
        ["bash", str(workdir / "examples.sh")],
        cwd=workdir,
        env=_session_env(),
        capture_output=True,
        text=True,
        timeout=1800,
    )
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    parts = re.split(r"^@@@ ([\w-]+)$", proc.stdout, flags=re.M)
    out = {name: body.strip() for name, body in zip(parts[1::2], parts[2::2], strict=True)}
    out.update(json.loads(out.pop("vars")))
    return out


@pytest.mark.timeout(2700)  # the fixture backfills three days and trains twice (scheduled + curl) for real
def test_readme_curl_examples_token_backfill_trigger_poll_asset_event(curl_run, admin_client):
    cfg = get_config()
    # Backfill: three runs, all successful, each day curated and validated.
    backfill = admin_client.call("GET", f"/backfills/{curl_run['BACKFILL_ID']}")
    assert backfill["dag_id"] == "recsys_ingest" and backfill["completed_at"]
    assert backfill["reprocess_behavior"] == "completed"
    unpaused, *runs = curl_run["backfill"].splitlines()
    assert unpaused == "False" and sorted(runs) == [f"{d} success" for d in DAYS], curl_run["backfill"]
    for day in DAYS:
        part = cfg.storage.partition("curated", day)
        assert storage.read_manifest(part)["rows"] > 2800
        assert is_validated(cfg, day)

    # Trigger: the run carries the conf; the poll loop printed its way to the final state.
    run = admin_client.call("GET", f"/dags/recsys_train/dagRuns/{curl_run['RUN_ID']}")
    assert run["conf"] == {"day": "2026-01-07", "window_days": 2, "epochs": 2, "reason": "curl example"}
    assert run["logical_date"] is None and run["run_type"] == "manual"
    lines = curl_run["poll"].splitlines()
    tasks = dict(line.split() for line in lines if len(line.split()) == 2)
    assert run["state"] == "success", curl_run["poll"][-3000:]
    assert lines[-len(tasks) - 1].endswith(f"{curl_run['RUN_ID']}: success")
    required = ("plan", "snapshot", "train_mf", "evaluate_mf", "train_ease", "tournament")
    required += ("register", "infra_validate")
    assert {t: tasks.get(t) for t in required} == dict.fromkeys(required, "success"), tasks
    # EASE has no epochs: the scheduled run already trained it on the same snapshot content, so the
    # curl run's EASE hits its cache and is not gated again (fresh_ease short-circuits).
    assert tasks["evaluate_ease"] in ("success", "skipped"), tasks
    assert tasks["promote"] in ("success", "skipped")  # skipped when the gate does not bless
    train = admin_client.call(
        "GET", f"/dags/recsys_train/dagRuns/{curl_run['RUN_ID']}/taskInstances/train_mf/xcomEntries/return_value"
    )["value"]
    train = json.loads(train) if isinstance(train, str) else train
    # The trained run is in MLflow, with the window the conf asked for.
    mlflow_run = requests.get(
        f"{cfg.mlflow.tracking_uri}/api/2.0/mlflow/runs/get", params={"run_id": train["run_id"]}, timeout=30
    ).json()["run"]
    assert mlflow_run["info"]["status"] == "FINISHED"
    params = {p["key"]: p["value"] for p in mlflow_run["data"]["params"]}
    assert params.get("epochs") == "2", params

    # Asset event: posted with its partition key (the day recsys_score would run for) and the
    # extra, visible in the event list.
    posted = json.loads(curl_run["asset-event"])
    assert posted["asset_id"] == int(curl_run["ASSET_ID"]) and posted["partition_key"] == "2026-01-07", posted
    assert posted["extra"]["day"] == "2026-01-07" and posted["extra"]["source"] == "curl example"
    events = admin_client.call("GET", "/assets/events", params={"asset_id": posted["asset_id"], "limit": 100})
    assert posted["id"] in {e["id"] for e in events["asset_events"]}


@pytest.mark.timeout(1800)
def test_readme_python_requests_example(curl_run, admin_client, live_stack, tmp_path):
    lang, code = readme_examples()["python"]
    assert lang == "python"
    before = {r["dag_run_id"] for r in admin_client.runs("recsys_train")}
    script = tmp_path / "example.py"
    script.write_text(localise(code, live_stack))
    proc = subprocess.run(
        [sys.executable, str(script)], cwd=tmp_path, env=_session_env(), capture_output=True, text=True, timeout=1500
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    new = {r["dag_run_id"]: r for r in admin_client.runs("recsys_train") if r["dag_run_id"] not in before}
    assert len(new) == 1, new
    run_id, run = next(iter(new.items()))
    assert run["conf"]["reason"] == "requests example" and run["conf"]["epochs"] == 3
    assert run["state"] == "success"
    printed = proc.stdout.strip().splitlines()[-1]
    assert printed.startswith(f"{run_id} success {{")
    assert "'register': 'success'" in printed


BAD_CONF = [
    ("recsys_train", {"epochs": -1}, "epochs", "less than the minimum of 1"),
    ("recsys_train", {"epochs": "ten"}, "epochs", "is not of type 'integer'"),
    ("recsys_train", {"epochs": 10_000}, "epochs", "greater than the maximum"),
    ("recsys_train", {"window_days": 0}, "window_days", "less than the minimum"),
    ("recsys_train", {"day": "07/01/2026"}, "day", "does not match"),
    ("recsys_train", {"force_retrain": "yes"}, "force_retrain", "is not of type 'boolean'"),
    ("recsys_train", {"families": ["mf", "als"]}, "families", "'als' is not one of"),
    ("recsys_train", {"families": []}, "families", "should be non-empty"),
    ("recsys_ingest", {"validation_engine": "dask"}, "validation_engine", "is not one of"),
    ("recsys_ingest", {"wait_timeout_s": 0}, "wait_timeout_s", "less than the minimum"),
]


@pytest.mark.parametrize(("dag_id", "conf", "param", "reason"), BAD_CONF, ids=[f"{d}-{p}" for d, _, p, _ in BAD_CONF])
def test_wrong_conf_is_rejected_naming_the_param_and_creates_no_run(admin_client, dag_id, conf, param, reason):
    admin_client.wait_for_dag(dag_id)
    before = admin_client.call("GET", f"/dags/{dag_id}/dagRuns", params={"limit": 1})["total_entries"]
    resp = admin_client.request("POST", f"/dags/{dag_id}/dagRuns", json={"logical_date": None, "conf": conf})
    assert resp.status_code == 400, resp.text
    detail = resp.json()["detail"]
    assert f"Invalid input for param {param}:" in detail and reason in detail, detail
    after = admin_client.call("GET", f"/dags/{dag_id}/dagRuns", params={"limit": 1})["total_entries"]
    assert after == before


def test_every_user_facing_param_is_typed_documented_and_bounded(admin_client):
    """What the trigger form shows: every param of every project DAG has a type, a description,
    bounds, and a default that fits its own schema and lets the form submit (or no default at
    all: the user must fill it in)."""
    import jsonschema

    for dag_id in ("recsys_ingest", "recsys_train"):
        admin_client.wait_for_dag(dag_id)
    dags = [
        d
        for d in admin_client.call("GET", "/dags", params={"limit": 1000})["dags"]
        if d["bundle_name"] == "dags-folder"
    ]
    assert len(dags) >= 3, [d["dag_id"] for d in dags]
    problems, checked = [], 0
    for dag in dags:
        dag_id = dag["dag_id"]
        for name, param in admin_client.call("GET", f"/dags/{dag_id}/details")["params"].items():
            checked += 1
            schema = param.get("schema") or {}
            kind = schema.get("type")
            kinds = set(kind) if isinstance(kind, list) else {kind}
            if not kind and "enum" not in schema:
                problems.append(f"{dag_id}.{name}: no type")
            if not param.get("description"):
                problems.append(f"{dag_id}.{name}: no description")
            if kinds & {"integer", "number"} and not (
                {"minimum", "exclusiveMinimum"} & set(schema) and {"maximum", "exclusiveMaximum"} & set(schema)
            ):
                problems.append(f"{dag_id}.{name}: number without minimum and maximum")
            if "string" in kinds and not {"maxLength", "enum", "pattern", "const"} & set(schema):
                problems.append(f"{dag_id}.{name}: string without maxLength/enum/pattern")
            if "array" in kinds and "maxItems" not in schema:
                problems.append(f"{dag_id}.{name}: array without maxItems")
            if param.get("value") == "" and "null" not in kinds:
                # The UI form treats "" as a missing required value and keeps Trigger disabled.
                problems.append(
                    f'{dag_id}.{name}: default "" blocks the trigger form; use type ["null", "string"], default None'
                )
            if param.get("value") is not None:
                try:
                    jsonschema.validate(param["value"], schema)
                except jsonschema.ValidationError as exc:
                    problems.append(f"{dag_id}.{name}: default {param['value']!r} violates its schema: {exc.message}")
    assert checked >= 8
    assert not problems, "\n".join(problems)
