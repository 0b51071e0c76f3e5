"""The Airflow UI as a user drives it: sign in, find the DAGs and their docs, trigger training from
the typed form, watch the run finish, follow the task's "MLflow run" link into MLflow.

Real components only: the session's live stack (api-server, scheduler, …, MLflow), Debian's
Chromium driven by Playwright, and a tiny curated world (three days, ingested and validated
in-process before the UI is opened) for the training run to work on.
"""

from __future__ import annotations

import re
import time
import urllib.parse
from datetime import date, timedelta

import pytest
from playwright.sync_api import TimeoutError as PlaywrightTimeout
from playwright.sync_api import expect

from jobs import sim as gen
from jobs.core.catalog import is_validated
from jobs.core.config import get_config
from jobs.ingest.job import ingest_day
from jobs.validate.job import validate_day

pytestmark = pytest.mark.browser

FIRST_DAY, N_DAYS = date(2026, 1, 5), 3
TINY_WORLD = gen.WorldParams(users=300, items=120, factors=4, seed=17, events_per_day=3000)
FORM = {"epochs": "1", "window_days": "2", "day": "2026-01-07", "reason": "browser test"}
GATED_TASKS = ("plan", "snapshot", "train_mf", "evaluate_mf", "tournament", "register", "infra_validate", "blessed")


@pytest.fixture(scope="module")
def curated_days(live_stack, spark) -> list[str]:
    """Three validated curated days (generated, ingested and validated in this process)."""
    cfg = get_config()
    days = [FIRST_DAY + timedelta(days=i) for i in range(N_DAYS)]
    if not all(is_validated(cfg, d) for d in days):
        gen.generate(TINY_WORLD, FIRST_DAY, N_DAYS, cfg.storage.zone("landing"), cfg.storage.zone("ground_truth"))
        for day in days:
            ingest_day(cfg, spark, day)
            assert validate_day(cfg, day)["success"], day
    return [d.isoformat() for d in days]


def _empty_string_defaults(admin_client, dag_id: str) -> list[str]:
    """Params the trigger form treats as required-and-missing: default "" without a null type."""
    params = admin_client.call("GET", f"/dags/{dag_id}/details")["params"]
    out = []
    for name, param in params.items():
        kind = (param.get("schema") or {}).get("type")
        if param.get("value") == "" and "null" not in (kind if isinstance(kind, list) else [kind]):
            out.append(name)
    return out


def test_sign_in_find_dags_read_docs(context, live_stack, admin_client, sign_in, shots):
    project = sorted(
        d["dag_id"]
        for d in admin_client.call("GET", "/dags", params={"limit": 1000})["dags"]
        if d["bundle_name"] == "dags-folder"
    )
    assert {"recsys_ingest", "recsys_train", "recsys_model_rollback"} <= set(project)
    page = context.new_page()
    page.goto(live_stack.airflow_url + "/dags")
    expect(page.get_by_role("button", name="Sign in")).to_be_visible()
    shots(page, "login")
    sign_in(page)

    page.goto(live_stack.airflow_url + "/dags")
    for dag_id in project:
        expect(page.get_by_role("link", name=dag_id, exact=True)).to_be_visible()
    shots(page, "dag-list")

    for dag_id in ("recsys_ingest", "recsys_train"):
        doc = admin_client.call("GET", f"/dags/{dag_id}/details")["doc_md"]
        title = next(line for line in doc.splitlines() if line.startswith("#")).lstrip("# ").strip()
        page.goto(f"{live_stack.airflow_url}/dags/{dag_id}")
        page.get_by_role("button", name="Dag Docs").click()
        dialog = page.get_by_role("dialog")
        expect(dialog.get_by_role("heading", name="Dag Documentation")).to_be_visible()
        expect(dialog.get_by_role("heading", name=title)).to_be_visible()
        shots(page, f"docs-{dag_id}")
        dialog.get_by_role("button", name="Close").click()


@pytest.mark.timeout(2700)  # unpausing first runs last Monday's scheduled training; a loaded 2-core box is slow
def test_trigger_training_from_the_form_watch_it_finish_and_open_mlflow(
    context, live_stack, admin_client, curated_days, sign_in, shots
):
    base = live_stack.airflow_url
    admin_client.wait_for_dag("recsys_train")
    page = context.new_page()
    sign_in(page)
    page.goto(f"{base}/dags/recsys_train")
    page.get_by_role("button", name="Trigger Dag").click()
    dialog = page.get_by_role("dialog")
    submit = dialog.get_by_test_id("trigger-dag-submit")
    # Typed fields: a number is a spin button bounded by its schema. A malformed day is refused by
    # the api-server's schema check: the form stays open with an error and no run is created.
    epochs = admin_client.call("GET", "/dags/recsys_train/details")["params"]["epochs"]["schema"]
    spin = dialog.get_by_role("spinbutton", name="Epochs")
    expect(spin).to_have_attribute("aria-valuemin", str(epochs["minimum"]))
    expect(spin).to_have_attribute("aria-valuemax", str(epochs["maximum"]))
    manual = {"limit": 1, "run_type": "manual"}  # unpausing may add the latest scheduled run
    runs_before = admin_client.call("GET", "/dags/recsys_train/dagRuns", params=manual)["total_entries"]
    dialog.locator("input[name=element_day]").fill("07/01/2026")
    if submit.is_enabled():
        submit.click()
        # The toaster may render one toast in two regions (same id, seen in CI): match any.
        error = page.get_by_text("Failed to Trigger Dag")
        expect(error.first).to_be_visible()
        shots(page, "form-rejects-bad-day")
        page.mouse.move(5, 5)  # a hovered toast stays; it covers the Trigger button
        expect(error).to_have_count(0, timeout=60_000)
    expect(dialog).to_be_visible()
    assert admin_client.call("GET", "/dags/recsys_train/dagRuns", params=manual)["total_entries"] == runs_before

    for name, value in FORM.items():
        dialog.locator(f"input[name=element_{name}]").fill(value)
    shots(page, "form-filled")
    assert submit.is_enabled(), (
        'the trigger form stays disabled with valid values; params with a "" default the form treats as '
        f"missing: {_empty_string_defaults(admin_client, 'recsys_train')} (declare them type=['null', 'string'])"
    )
    unpause = dialog.get_by_label(re.compile(r"Unpause .* on trigger"))
    if unpause.count():
        unpause.check()
    submit.click()

    try:
        page.wait_for_url(re.compile(r"/dags/recsys_train/runs/[^/]+$"))
    except PlaywrightTimeout:  # say what the page said instead (seen once in CI: no navigation)
        shots(page, "trigger-did-not-open-the-run")
        toasts = page.locator("[data-scope=toast][data-part=root]").all_inner_texts()
        runs = admin_client.call("GET", "/dags/recsys_train/dagRuns", params={"limit": 20})["dag_runs"]
        raise AssertionError(
            f"the trigger did not open the run page ({page.url}); toasts: {toasts}; runs: "
            f"{[(r['dag_run_id'], r['run_type'], r['state']) for r in runs]}"
        ) from None
    run_id = urllib.parse.unquote(page.url.rsplit("/", 1)[-1])
    run = admin_client.call("GET", f"/dags/recsys_train/dagRuns/{run_id}")
    assert run["triggering_user_name"] == "admin"
    assert {k: str(run["conf"][k]) for k in FORM} == FORM
    header_state = page.get_by_role("heading", name=run_id).locator("xpath=..").get_by_test_id("state-badge")
    expect(header_state).to_be_visible()
    shots(page, "run-started")

    deadline = time.monotonic() + 1500
    while header_state.inner_text().strip() not in ("Success", "Failed") and time.monotonic() < deadline:
        time.sleep(15)
        if admin_client.call("GET", f"/dags/recsys_train/dagRuns/{run_id}")["state"] in ("success", "failed"):
            page.reload()
            header_state.wait_for()
    shots(page, "run-finished")
    assert header_state.inner_text().strip() == "Success", admin_client.call(
        "GET", f"/dags/recsys_train/dagRuns/{run_id}/taskInstances"
    )

    # The grid has a cell per task of this run; the run's task table shows each state.
    for task_id in (*GATED_TASKS, "promote"):
        expect(page.get_by_test_id(f"grid-{run_id}-{task_id}")).to_be_visible()
    for task_id in GATED_TASKS:
        row = page.get_by_role("row").filter(has=page.get_by_role("link", name=task_id, exact=True))
        expect(row.get_by_text("Success", exact=True)).to_be_visible()
    promote_row = page.get_by_role("row").filter(has=page.get_by_role("link", name="promote", exact=True))
    expect(promote_row.get_by_text(re.compile(r"^(Success|Skipped)$"))).to_be_visible()

    # The training task's extra link leads to its MLflow run.
    page.get_by_test_id(f"grid-{run_id}-train_mf").click()
    page.wait_for_url(re.compile(r"/tasks/train_mf"))
    page.get_by_role("link", name="Details", exact=True).click()
    link = page.get_by_role("link", name="MLflow run")
    expect(link).to_be_visible()
    shots(page, "train-task-details")
    train = admin_client.call(
        "GET", f"/dags/recsys_train/dagRuns/{run_id}/taskInstances/train_mf/xcomEntries/return_value"
    )["value"]
    mlflow_run_id = train["run_id"] if isinstance(train, dict) else re.search(r"[0-9a-f]{32}", str(train)).group(0)
    href = link.get_attribute("href")
    assert href.startswith(live_stack.mlflow_url + "/#/experiments/") and href.endswith(f"/runs/{mlflow_run_id}")
    with context.expect_page() as opened:
        link.click()
    mlflow_page = opened.value
    mlflow_page.wait_for_load_state()
    run_name = f"recsys_train__{run_id}".replace(":", "_").replace("+", "_")
    expect(mlflow_page.get_by_text(run_name).first).to_be_visible(timeout=120_000)
    expect(mlflow_page).to_have_title(re.compile(mlflow_run_id))
    expect(mlflow_page.get_by_text("epochs", exact=True).first).to_be_visible()
    shots(mlflow_page, "mlflow-run")
