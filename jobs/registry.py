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


def register(cfg: PipelineConfig, run_id: str, tags: dict[str, Any], model_uri: str | None = None) -> dict[str, Any]:
    """Register the run's model as a new version (idempotent per run) with alias challenger.

    Args:
        model_uri: the logged model (MLflow 3 ``models:/m-<id>``); default ``runs:/<run_id>/model``.
    """
    import mlflow

    cl = client(cfg)
    name = cfg.mlflow.model_name
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
        else:
            mv = mlflow.register_model(model_uri or f"runs:/{run_id}/model", name, await_registration_for=120)
            version = str(mv.version)
        all_tags = {"git_commit": git_commit(), "registered_at": _now(), **tags}
        for key, value in all_tags.items():
            cl.set_model_version_tag(name, version, key, str(value))
        cl.set_registered_model_alias(name, CHALLENGER, version)
    return {"name": name, "version": version, "model_uri": f"models:/{name}/{version}", "reused": bool(existing)}


def promote(
    cfg: PipelineConfig, version: str, expected_champion: str | None, reason: str, actor: str
) -> dict[str, Any]:
    """Move ``champion`` to ``version`` if the champion is still ``expected_champion``."""
    cl = client(cfg)
    name = cfg.mlflow.model_name
    with registry_lock(cfg):
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
        for key, value in {
            "decision": "promoted",
            "decision_reason": reason,
            "promoted_at": _now(),
            "promoted_by": actor,
        }.items():
            cl.set_model_version_tag(name, version, key, value)
        if current:
            cl.set_model_version_tag(name, current, "replaced_by", version)
            cl.set_registered_model_alias(name, PREVIOUS, current)
        cl.set_registered_model_alias(name, CHAMPION, version)
    return {"promoted": True, "version": version, "previous": current, "decision": "promoted", "reason": reason}


def rollback(cfg: PipelineConfig, reason: str, actor: str) -> dict[str, Any]:
    """One-step rollback: champion ← previous_champion (audited on both versions)."""
    cl = client(cfg)
    name = cfg.mlflow.model_name
    with registry_lock(cfg):
        current = alias_version(cl, name, CHAMPION)
        previous = alias_version(cl, name, PREVIOUS)
        if not previous:
            raise RegistryError(f"{name} has no previous_champion to roll back to")
        stamp = _now()
        cl.set_model_version_tag(name, previous, "decision", "rollback_restored")
        cl.set_model_version_tag(name, previous, "decision_reason", f"{reason} (by {actor} at {stamp})")
        if current:
            cl.set_model_version_tag(name, current, "decision", "rolled_back")
            cl.set_model_version_tag(name, current, "decision_reason", f"{reason} (by {actor} at {stamp})")
            cl.set_registered_model_alias(name, PREVIOUS, current)
        cl.set_registered_model_alias(name, CHAMPION, previous)
    return {"champion": previous, "previous_champion": current, "reason": reason, "actor": actor}


def show(cfg: PipelineConfig) -> dict[str, Any]:
    cl = client(cfg)
    name = cfg.mlflow.model_name
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
        sp.add_argument("--result-file", type=Path)
    args = ap.parse_args(argv)
    try:
        cfg = get_config()
        if args.command == "register":
            out = register(cfg, args.run_id, args.tags, args.model_uri)
        elif args.command == "promote":
            out = promote(cfg, args.version, args.expected_champion or None, args.reason, args.actor)
        elif args.command == "rollback":
            out = rollback(cfg, args.reason, args.actor)
        else:
            out = show(cfg)
    except (ConfigError, RegistryError) as exc:
        print(f"registry: {exc}", file=sys.stderr)
        if args.result_file:
            storage.write_json_atomic(args.result_file, {"message": str(exc)})
        return 3
    if args.result_file:
        storage.write_json_atomic(args.result_file, out)
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
