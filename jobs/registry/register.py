"""Registration: a trained run's model becomes a version with alias ``challenger`` and its lineage.

The version's tags say where it came from and what the gate said, read from the sources of
record rather than passed through the orchestrator: the snapshot manifest (``snapshot_uri``,
``snapshot_day`` — the held-out day —, ``window_start``, ``window_end``: the first and last
training day), the training run's cache key (``cache_key``: ``jobs.core.cache``), its gate tags (``decision`` = blessed / not_blessed,
``decision_reason``, ``gate_champion_version``), the code version (``git_commit``), the
registration time and the caller's context (``trigger_reason``, Airflow run and DAG ids, and any
``--tags``), and its model card (``jobs.registry.card``, tag ``model_card``). Idempotent per run: a retried registration returns the same version and only fills
in tags that are missing (it never rewrites what happened since, e.g. ``decision=promoted``).

``register_candidates`` registers every candidate of a families tournament (``recsys_train``):
each version carries its ``family`` tag and ``tournament`` line, a blessed loser
``decision=lost_tournament`` with its reason; only the winner becomes ``challenger``.
"""

from __future__ import annotations

from typing import Any

from jobs.core import storage
from jobs.core.cache import RUN_TAG, VERSION_TAG
from jobs.core.cli import BadArgument
from jobs.core.config import PipelineConfig
from jobs.core.results import RegistrationResult
from jobs.core.tracking import CHALLENGER, client, git_commit
from jobs.registry.aliases import now_iso, registry_lock
from jobs.registry.card import write_card

SNAPSHOT_FIELDS = {"snapshot_day": "day", "window_start": "window_start", "window_end": "window_end"}


def lineage_tags(cl: Any, run_id: str, snapshot_uri: str | None) -> dict[str, str]:
    """The tags a version gets from its snapshot's manifest and its run's gate decision."""
    tags: dict[str, str] = {}
    if snapshot_uri:
        manifest = storage.read_manifest(snapshot_uri)
        if manifest is None:
            raise BadArgument(f"snapshot {snapshot_uri} is not published (no _SUCCESS manifest)")
        tags["snapshot_uri"] = snapshot_uri
        tags.update({tag: str(manifest[key]) for tag, key in SNAPSHOT_FIELDS.items() if manifest.get(key)})
    run_tags = cl.get_run(run_id).data.tags
    if RUN_TAG in run_tags:
        tags[VERSION_TAG] = run_tags[RUN_TAG]
    if "gate.decision" in run_tags:
        tags["decision"] = run_tags["gate.decision"]
        tags["decision_reason"] = run_tags.get("gate.reason", "")
        tags["gate_champion_version"] = run_tags.get("gate.champion_version", "none")
        if "gate.evidence" in run_tags:
            tags["evidence"] = run_tags["gate.evidence"]
    return tags


def register(
    cfg: PipelineConfig,
    run_id: str,
    tags: dict[str, Any],
    model_uri: str | None = None,
    model_name: str | None = None,
    snapshot_uri: str | None = None,
    alias: bool = True,
) -> RegistrationResult:
    """Register the run's model as a new version (idempotent per run) with alias challenger.

    Args:
        tags: extra version tags (the caller's context).
        model_uri: the logged model (MLflow 3 ``models:/m-<id>``); default ``runs:/<run_id>/model``.
        model_name: the registered model (default ``mlflow.model_name``).
        snapshot_uri: the training snapshot, whose manifest gives the window tags.
        alias: False: no ``challenger`` alias (a candidate that lost the tournament).
    """
    import mlflow
    from mlflow.exceptions import MlflowException

    cl = client(cfg)
    name = model_name or cfg.mlflow.model_name
    lineage = lineage_tags(cl, run_id, snapshot_uri)
    with registry_lock(cfg):
        try:
            cl.create_registered_model(name)
        except MlflowException as exc:
            if "RESOURCE_ALREADY_EXISTS" not in str(exc.error_code):
                raise
        existing = list(cl.search_model_versions(f"name='{name}' and run_id='{run_id}'"))
        if existing:
            version = str(max(int(mv.version) for mv in existing))
            kept = cl.get_model_version(name, version).tags
        else:
            mv = mlflow.register_model(model_uri or f"runs:/{run_id}/model", name, await_registration_for=120)
            version = str(mv.version)
            kept = {}
        all_tags = {"git_commit": git_commit(), "registered_at": now_iso(), **lineage, **tags}
        for key, value in all_tags.items():
            if key not in kept:
                cl.set_model_version_tag(name, version, key, str(value))
        if alias:
            cl.set_registered_model_alias(name, CHALLENGER, version)
    card = write_card(cfg, cl, name, version, run_id, snapshot_uri, {**all_tags, **kept})
    return {
        "name": name,
        "version": version,
        "model_uri": f"models:/{name}/{version}",
        "reused": bool(existing),
        "tags": {**all_tags, **kept, "model_card": card["uri"]},
        "model_card": card["uri"],
        "run_id": run_id,
        "experiment_id": card["model"]["experiment_id"],
    }


def register_candidates(
    cfg: PipelineConfig,
    candidates: list[dict[str, Any]],
    tags: dict[str, Any],
    model_name: str | None = None,
    snapshot_uri: str | None = None,
) -> RegistrationResult:
    """Register every candidate of a tournament (``recsys_airflow.tournament``) in the given order,
    each with its own tags (``family``, and a lost candidate's decision and reason) over ``tags``;
    only the one marked ``challenger`` gets the alias. Returns the challenger's registration
    with ``candidates`` (family, version, decision) for all."""
    if sum(bool(c.get("challenger")) for c in candidates) != 1:
        raise BadArgument("--candidates needs exactly one candidate with challenger: true")
    done, winner = [], None
    for c in candidates:
        result = register(
            cfg,
            c["run_id"],
            {**tags, **c.get("tags", {})},
            c.get("model_uri"),
            model_name,
            snapshot_uri,
            alias=False,
        )
        done.append(
            {"family": c.get("family"), "version": result["version"], "decision": result["tags"].get("decision")}
        )
        if c.get("challenger"):
            winner = result
    with registry_lock(cfg):  # the alias last: a retry after a crash above re-registers nothing new
        client(cfg).set_registered_model_alias(winner["name"], CHALLENGER, winner["version"])
    return {**winner, "candidates": done}
