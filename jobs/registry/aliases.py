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

import contextlib
import fcntl
import json
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from jobs.core.cli import BadInput
from jobs.core.config import PipelineConfig
from jobs.core.results import AliasesResult, PromotionResult, ReviewResult, RollbackResult
from jobs.core.tracking import CHALLENGER, CHAMPION, PREVIOUS, alias_version, client


class RegistryError(BadInput):
    """A registry operation was refused (the message says why)."""


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


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


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
        "at": now_iso(),
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
        f"{plan['op']} by {plan.get('actor')} at {plan['at']} was interrupted; undone at {now_iso()}",
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
) -> PromotionResult:
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
            version: {"decision": "promoted", "decision_reason": reason, "promoted_at": now_iso(), "promoted_by": actor}
        }
        if current:
            tags[current] = {"replaced_by": version}
        _move_champion(
            cl, name, "promote", version, current, tags, expected=expected_champion or None, reason=reason, actor=actor
        )
    return {"promoted": True, "version": version, "previous": current, "decision": "promoted", "reason": reason}


def rollback(cfg: PipelineConfig, reason: str, actor: str, model_name: str | None = None) -> RollbackResult:
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
        stamp = now_iso()
        audit = f"{reason} (by {actor} at {stamp})"
        tags = {previous: {"decision": "rollback_restored", "decision_reason": audit}}
        if current:
            tags[current] = {"decision": "rolled_back", "decision_reason": audit}
        _move_champion(cl, name, "rollback", previous, current, tags, reason=reason, actor=actor)
    return {"champion": previous, "previous_champion": current, "reason": reason, "actor": actor}


REVIEW_TAGS = ("review.decision", "review.by", "review.reason", "review.at")


def review(
    cfg: PipelineConfig, version: str, decision: str, by: str, reason: str, model_name: str | None = None
) -> ReviewResult:
    """Record a person's approval or rejection of ``version`` as version tags (``review.*``);
    a rejected version keeps its aliases: promotion is skipped, the champion stays."""
    if decision not in ("approved", "rejected"):
        raise RegistryError(f"review decision {decision!r}: expected approved or rejected")
    if not by:
        raise RegistryError("a review names who decided (--by)")
    name = model_name or cfg.mlflow.model_name
    cl = client(cfg)
    try:
        mv = cl.get_model_version(name, version)
    except Exception as exc:  # MlflowException RESOURCE_DOES_NOT_EXIST
        raise RegistryError(f"{name} has no version {version!r}: {exc}") from exc
    tags = dict(zip(REVIEW_TAGS, (decision, by, reason[:500], now_iso()), strict=True))
    for key, value in tags.items():
        cl.set_model_version_tag(name, version, key, value)
    from jobs.registry.card import add_review

    carded = add_review(cl, mv, {k.split(".", 1)[1]: v for k, v in tags.items()})
    return {"model": name, "version": str(version), **tags, "card_updated": carded}


def show(cfg: PipelineConfig, model_name: str | None = None) -> AliasesResult:
    cl = client(cfg)
    name = model_name or cfg.mlflow.model_name
    return {alias: alias_version(cl, name, alias) for alias in (CHAMPION, CHALLENGER, PREVIOUS)}
