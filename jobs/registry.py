"""Model registry operations with MLflow aliases (stages are deprecated).

``python -m jobs.registry register|promote|rollback|show ...``

Aliases
  * ``challenger`` — the newest registered candidate;
  * ``champion`` — what scoring serves;
  * ``previous_champion`` — the champion before the last move, for one-step rollback.

Safety rules
  * Tags are written before the alias moves: the alias is the commit point, so a crash (or an
    MLflow outage) between the two leaves the old champion serving and a version tagged with a
    decision that a retry repeats idempotently — never an alias on a version without its tags.
  * Promotion is serialised: an exclusive lock (a file lock in the local profile; the
    single-slot Airflow pool ``model_registry`` serialises tasks across workers) plus a
    compare-and-set: the gate records which champion it compared against, and ``promote``
    refuses (decision ``stale_gate``) when the champion moved since. So two runs finishing
    together leave exactly one champion: the first one to pass the gate against the champion
    it actually replaced ("first blessed wins"); the second must be re-evaluated.
  * Rollback swaps ``champion`` and ``previous_champion`` and tags both versions with who asked
    and why (audited); a manual promotion goes through the same path.
  * An alias move (promotion, rollback) is several MLflow calls; an outage or a kill between
    two leaves its journal entry (the registered-model tag ``alias_move``, state ``pending``,
    written before the first call, ``done`` after the last). The next registry operation
    settles it before anything else: the same operation retried finishes it (and a retry of a
    move that was done does not move again), any other one undoes it (see "Interrupted alias
    moves" below). So a retry after an outage is exact, a retried rollback never rolls back
    twice, and a rollback issued after a failed promotion rolls back to the right version.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from jobs import storage
from jobs.config import REPO_ROOT, ConfigError, PipelineConfig, get_config

CHAMPION, CHALLENGER, PREVIOUS = "champion", "challenger", "previous_champion"


class RegistryError(RuntimeError):
    """A registry operation was refused (the message says why)."""


def tracking_errors() -> tuple[type[BaseException], ...]:
    """What a tracking-server outage raises in a client: MLflow's own error (its REST layer
    wraps refused connections, timeouts and 5xx after its retries) and a bare ``requests``
    error (artifact downloads through the server's proxy). A job catches these and exits 1,
    which the task retries; the message comes from ``tracking_failure``."""
    import requests
    from mlflow.exceptions import MlflowException

    return (MlflowException, requests.exceptions.RequestException)


def tracking_failure(cfg: PipelineConfig, exc: BaseException) -> str:
    """One line naming the tracking server and what went wrong."""
    return f"request to the MLflow tracking server {cfg.mlflow.tracking_uri} failed: {exc}"


def tracking_exit(cfg: PipelineConfig, exc: BaseException, what: str, result_file: Path | None) -> int:
    """A job's exit on a tracking-server outage: ``<what>: <tracking_failure>`` on stderr and
    in the result file (the task log shows it); 1, which the task retries."""
    message = f"{what}: {tracking_failure(cfg, exc)}"
    print(message, file=sys.stderr, flush=True)
    if result_file:
        storage.write_json_atomic(result_file, {"message": message[:2000]})
    return 1


def client(cfg: PipelineConfig):
    import mlflow
    from mlflow import MlflowClient

    mlflow.set_tracking_uri(cfg.mlflow.tracking_uri)
    return MlflowClient(tracking_uri=cfg.mlflow.tracking_uri, registry_uri=cfg.mlflow.tracking_uri)


def alias_version(cl: Any, name: str, alias: str) -> str | None:
    from mlflow.exceptions import MlflowException

    try:
        return str(cl.get_model_version_by_alias(name, alias).version)
    except MlflowException as exc:
        if "RESOURCE_DOES_NOT_EXIST" in str(exc.error_code) or "not found" in str(exc).lower():
            return None
        raise


@contextlib.contextmanager
def registry_lock(cfg: PipelineConfig) -> Iterator[None]:
    """Exclusive lock around alias moves (local profile: a file lock beside the data zones)."""
    if not cfg.storage.is_local:
        yield
        return
    path = Path(cfg.storage.root_path()) / ".registry.lock"
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def git_commit() -> str:
    try:
        return subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=REPO_ROOT, capture_output=True, text=True, check=True, timeout=10
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def register(
    cfg: PipelineConfig,
    run_id: str,
    tags: dict[str, Any],
    model_uri: str | None = None,
    model_name: str | None = None,
) -> dict[str, Any]:
    """Register the run's model as a new version (idempotent per run) with alias challenger.

    Args:
        model_uri: the logged model (MLflow 3 ``models:/m-<id>``); default ``runs:/<run_id>/model``.
        model_name: the registered model (default ``mlflow.model_name``).
    """
    import mlflow

    cl = client(cfg)
    name = model_name or cfg.mlflow.model_name
    with registry_lock(cfg):
        from mlflow.exceptions import MlflowException

        try:
            cl.create_registered_model(name)
        except MlflowException as exc:
            if "RESOURCE_ALREADY_EXISTS" not in str(exc.error_code):
                raise
        existing = [mv for mv in cl.search_model_versions(f"name='{name}' and run_id='{run_id}'")]
        if existing:
            version = str(max(int(mv.version) for mv in existing))
            kept = cl.get_model_version(name, version).tags
        else:
            mv = mlflow.register_model(model_uri or f"runs:/{run_id}/model", name, await_registration_for=120)
            version = str(mv.version)
            kept = {}
        all_tags = {"git_commit": git_commit(), "registered_at": _now(), **tags}
        for key, value in all_tags.items():
            # A re-registration (a retried or re-run task) only fills in missing tags: it must not
            # rewrite what happened since, e.g. decision=promoted on a version that became champion.
            if key not in kept:
                cl.set_model_version_tag(name, version, key, str(value))
        cl.set_registered_model_alias(name, CHALLENGER, version)
    return {"name": name, "version": version, "model_uri": f"models:/{name}/{version}", "reused": bool(existing)}


# ---- Interrupted alias moves (journal, redo, undo) ----------------------------------------
#
# A move is planned in full first: every version tag and alias it sets, with the values they had.
# The plan is written to the registered-model tag JOURNAL with state "pending", applied in order
# (version tags, previous_champion, champion: the commit point), then marked "done". Every step
# is an idempotent "set", so applying a plan twice is harmless. The next operation under the
# registry lock settles the journal first:
#   * pending, and champion already points at the plan's target: it had committed; finish it;
#   * pending, and the same operation is retried: finish it (redo) and report it as done;
#   * pending, anything else: undo it (tags and previous_champion restored, the target tagged
#     ``interrupted_<op>``), state "undone", then run the new operation;
#   * done, and the same operation is retried: report it as done, do not move again. A rollback
#     retried after its answer was lost would otherwise roll back twice (back to the bad model).
# "The same operation" is a promotion of the same version against the same expected champion,
# or a rollback by the same actor with the same reason (the rollback DAG's actor holds its run id).

JOURNAL = "alias_move"


def _journal(cl: Any, name: str, plan: dict[str, Any], state: str) -> None:
    cl.set_registered_model_tag(name, JOURNAL, json.dumps({**plan, "state": state}, sort_keys=True))


def _move_champion(
    cl: Any, name: str, op: str, target: str, current: str | None, tags: dict[str, dict[str, str]], **info: Any
) -> dict[str, Any]:
    """Journal, then apply, the move of ``champion`` from ``current`` to ``target``."""
    before = {v: {k: cl.get_model_version(name, v).tags.get(k) for k in t} for v, t in tags.items()}
    aliases = {PREVIOUS: current, CHAMPION: target} if current else {CHAMPION: target}
    plan = {
        "op": op,
        "target": target,
        "from": current,
        "at": _now(),
        "tags": tags,
        "tags_before": before,
        "aliases": aliases,
        "aliases_before": {PREVIOUS: alias_version(cl, name, PREVIOUS), CHAMPION: current},
        **info,
    }
    _journal(cl, name, plan, "pending")
    _apply_move(cl, name, plan)
    return plan


def _apply_move(cl: Any, name: str, plan: dict[str, Any]) -> None:
    for version, tags in plan["tags"].items():
        for key, value in tags.items():
            cl.set_model_version_tag(name, version, key, value)
    if PREVIOUS in plan["aliases"]:
        cl.set_registered_model_alias(name, PREVIOUS, plan["aliases"][PREVIOUS])
    cl.set_registered_model_alias(name, CHAMPION, plan["aliases"][CHAMPION])
    _journal(cl, name, plan, "done")


def settle_pending(cl: Any, name: str, retry_of: dict[str, Any]) -> dict[str, Any] | None:
    """Settle the last alias move; returns its plan when ``retry_of`` is that same move, now done.

    Args:
        retry_of: the operation about to run, ``{"op": "promote", "target", "expected"}`` or
            ``{"op": "rollback", "actor", "reason"}``.
    """
    try:
        raw = cl.get_registered_model(name).tags.get(JOURNAL)
    except Exception as exc:
        if "RESOURCE_DOES_NOT_EXIST" in str(getattr(exc, "error_code", "")):
            return None
        raise
    if not raw:
        return None
    plan = json.loads(raw)
    same = all(plan.get(key) == value for key, value in retry_of.items())
    champion = alias_version(cl, name, CHAMPION)
    if plan["state"] != "pending":
        return plan if plan["state"] == "done" and same and champion == plan["target"] else None
    if same or champion == plan["target"] != plan["aliases_before"][CHAMPION]:
        _apply_move(cl, name, plan)
        return plan if same else None
    for version, tags in plan["tags_before"].items():
        for key, value in tags.items():
            if value is None:
                cl.delete_model_version_tag(name, version, key)
            else:
                cl.set_model_version_tag(name, version, key, value)
    if PREVIOUS in plan["aliases"]:
        if plan["aliases_before"][PREVIOUS]:
            cl.set_registered_model_alias(name, PREVIOUS, plan["aliases_before"][PREVIOUS])
        else:
            cl.delete_registered_model_alias(name, PREVIOUS)
    cl.set_model_version_tag(
        name,
        plan["target"],
        f"interrupted_{plan['op']}",
        f"{plan['op']} by {plan.get('actor')} at {plan['at']} was interrupted; undone at {_now()}",
    )
    _journal(cl, name, plan, "undone")
    return None


def promote(
    cfg: PipelineConfig,
    version: str,
    expected_champion: str | None,
    reason: str,
    actor: str,
    model_name: str | None = None,
) -> dict[str, Any]:
    """Move ``champion`` to ``version`` if the champion is still ``expected_champion``."""
    cl = client(cfg)
    name = model_name or cfg.mlflow.model_name
    with registry_lock(cfg):
        resumed = settle_pending(cl, name, {"op": "promote", "target": version, "expected": expected_champion or None})
        if resumed is not None:
            return {
                "promoted": True,
                "version": version,
                "previous": resumed["from"],
                "decision": "promoted",
                "reason": resumed["reason"],
            }
        current = alias_version(cl, name, CHAMPION)
        if current == version:
            return {"promoted": False, "version": version, "champion": current, "decision": "already_champion"}
        if (current or "") != (expected_champion or ""):
            cl.set_model_version_tag(name, version, "decision", "stale_gate")
            cl.set_model_version_tag(
                name,
                version,
                "decision_reason",
                f"champion moved from {expected_champion or 'none'} to {current} since evaluation",
            )
            raise RegistryError(
                f"champion of {name} is version {current}, not {expected_champion or 'none'} as evaluated: "
                "re-run the evaluation against the current champion"
            )
        tags = {
            version: {"decision": "promoted", "decision_reason": reason, "promoted_at": _now(), "promoted_by": actor}
        }
        if current:
            tags[current] = {"replaced_by": version}
        _move_champion(
            cl, name, "promote", version, current, tags, expected=expected_champion or None, reason=reason, actor=actor
        )
    return {"promoted": True, "version": version, "previous": current, "decision": "promoted", "reason": reason}


def rollback(cfg: PipelineConfig, reason: str, actor: str, model_name: str | None = None) -> dict[str, Any]:
    """One-step rollback: champion ← previous_champion (audited on both versions)."""
    cl = client(cfg)
    name = model_name or cfg.mlflow.model_name
    with registry_lock(cfg):
        resumed = settle_pending(cl, name, {"op": "rollback", "actor": actor, "reason": reason})
        if resumed is not None:
            return {
                "champion": resumed["target"],
                "previous_champion": resumed["from"],
                "reason": resumed["reason"],
                "actor": resumed["actor"],
            }
        current = alias_version(cl, name, CHAMPION)
        previous = alias_version(cl, name, PREVIOUS)
        if not previous:
            raise RegistryError(f"{name} has no previous_champion to roll back to")
        stamp = _now()
        audit = f"{reason} (by {actor} at {stamp})"
        tags = {previous: {"decision": "rollback_restored", "decision_reason": audit}}
        if current:
            tags[current] = {"decision": "rolled_back", "decision_reason": audit}
        _move_champion(cl, name, "rollback", previous, current, tags, reason=reason, actor=actor)
    return {"champion": previous, "previous_champion": current, "reason": reason, "actor": actor}


def show(cfg: PipelineConfig, model_name: str | None = None) -> dict[str, Any]:
    cl = client(cfg)
    name = model_name or cfg.mlflow.model_name
    return {alias: alias_version(cl, name, alias) for alias in (CHAMPION, CHALLENGER, PREVIOUS)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m jobs.registry", description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="command", required=True)
    p = sub.add_parser("register")
    p.add_argument("--run-id", required=True)
    p.add_argument("--model-uri", help="logged model URI (default runs:/<run-id>/model)")
    p.add_argument("--tags", type=json.loads, default={}, help="JSON object of version tags")
    p = sub.add_parser("promote")
    p.add_argument("--version", required=True)
    p.add_argument("--expected-champion", default="")
    p.add_argument("--reason", required=True)
    p.add_argument("--actor", default=os.environ.get("USER", "airflow"))
    p = sub.add_parser("rollback")
    p.add_argument("--reason", required=True)
    p.add_argument("--actor", default=os.environ.get("USER", "airflow"))
    sub.add_parser("show")
    for sp in sub.choices.values():
        sp.add_argument("--model-name", help="registered model (default mlflow.model_name)")
        sp.add_argument("--result-file", type=Path)
    args = ap.parse_args(argv)
    try:
        cfg = get_config()
        if args.command == "register":
            out = register(cfg, args.run_id, args.tags, args.model_uri, args.model_name)
        elif args.command == "promote":
            out = promote(cfg, args.version, args.expected_champion or None, args.reason, args.actor, args.model_name)
        elif args.command == "rollback":
            out = rollback(cfg, args.reason, args.actor, args.model_name)
        else:
            out = show(cfg, args.model_name)
    except (ConfigError, RegistryError) as exc:
        print(f"registry: {exc}", file=sys.stderr)
        if args.result_file:
            storage.write_json_atomic(args.result_file, {"message": str(exc)})
        return 3
    except tracking_errors() as exc:  # server down, timeout, 5xx: exit 1 = retryable
        return tracking_exit(get_config(), exc, "registry", args.result_file)
    if args.result_file:
        storage.write_json_atomic(args.result_file, out)
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
