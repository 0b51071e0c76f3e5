"""Contracts as code (``jobs.core.results``, ``jobs.core.schema``, ``jobs.core.partitions``,
``jobs.core.errors``, ``jobs.core.trainer_protocol``): the declarations, what is derived from
them, and the shared writer and trainer protocol that use them."""

from __future__ import annotations

import argparse
import importlib
import json
import typing

import numpy as np
import pyarrow.parquet as pq
import pytest

from jobs.core import results, storage
from jobs.core.config import get_config
from jobs.core.errors import BadInput, ExitCode, SnapshotError
from jobs.core.partitions import recommendations_table, write_recommendations
from jobs.core.results import LINEAGE_OUTPUT_KEYS, RESULTS, TrainResult, problems
from jobs.core.schema import RecommendationsManifest, recommendations_schema
from jobs.core.snapshots import TrainData
from jobs.core.trainer_protocol import RESULT, TrainerRun

pytestmark = pytest.mark.unit

TRAINERS = ("jobs.train.job", "jobs.seq.job", "jobs.ease.job", "jobs.popularity.job")


def test_every_declaration_resolves_and_lineage_outputs_come_from_them():
    for result_type in RESULTS:
        assert typing.get_type_hints(result_type, include_extras=True), result_type
        assert "cost" in results.keys(result_type) or result_type is results.AliasesResult
    assert LINEAGE_OUTPUT_KEYS == ("curated_uri", "model_uri", "quarantine_uri", "report_html", "report_json", "uri")
    assert "report_uri" not in LINEAGE_OUTPUT_KEYS  # a key no job emits

    from recsys_airflow import launcher

    assert launcher.LINEAGE_OUTPUT_KEYS is LINEAGE_OUTPUT_KEYS


def test_problems_names_missing_undeclared_and_mistyped_keys():
    cached = {"cached": True, "cache_key": "abc", "run_id": "r1", "model_uri": "models:/m/3", "k": 10}
    assert problems(TrainResult, {**cached, "cached_version": "3"}) == []
    assert problems(TrainResult, {**cached, "metrics": {"recall_at_10": 1}}) == []  # a JSON int is a float
    found = problems(TrainResult, {"cached": "yes", "cache_key": "abc", "k": 10, "report_uri": "x"})
    assert found == [
        "missing key 'model_uri'",
        "missing key 'run_id'",
        "undeclared key 'report_uri'",
        "'cached' is str, declared <class 'bool'>",
    ]
    review = {"model": "m", "version": "2", "review.decision": "approved", "review.by": "a", "review.reason": "r"}
    assert problems(results.ReviewResult, {**review, "review.at": "t", "card_updated": False}) == []


def test_snapshot_error_is_bad_input_everywhere():
    from jobs.core import snapshots
    from jobs.snapshot import job as snapshot_job

    assert snapshot_job.SnapshotError is snapshots.SnapshotError is SnapshotError
    assert issubclass(SnapshotError, BadInput) and SnapshotError.exit_code == ExitCode.BAD_INPUT == 3


def test_errors_is_a_leaf_and_fs_no_longer_imports_the_cli():
    import ast
    from pathlib import Path

    def imported(module: str) -> set[str]:
        tree = ast.parse(Path(importlib.import_module(module).__file__).read_text())
        return {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}

    assert not {m for m in imported("jobs.core.errors") if m.startswith("jobs")}
    assert "jobs.core.cli" not in imported("jobs.core.fs") | imported("jobs.core.storage")


def test_the_partition_writer_publishes_the_recommendations_contract(tmp_path):
    uri = str(tmp_path / "recommendations" / "dt=2026-01-05")
    table = recommendations_table([7, 7, 8], [1, 2, 1], [30, 31, 30], [0.9, 0.5, 0.7], "4", "run-a")
    manifest = write_recommendations(
        uri, table, day="2026-01-05", model_name="recsys", k=2, source_days=["2026-01-05"], unknown_users=0
    )
    assert problems(RecommendationsManifest, manifest) == []
    assert storage.read_manifest(uri) == json.loads(json.dumps(manifest))
    assert (manifest["users"], manifest["rows"], manifest["model_version"]) == (2, 3, "4")
    read = pq.read_table(storage.local_path(uri) / manifest["files"][0])
    assert read.schema == recommendations_schema()
    assert read.column("item_id").to_pylist() == [30, 31, 30]
    with pytest.raises(KeyError):  # a table without the contract's columns is refused
        write_recommendations(uri, table.drop(["score"]), day="2026-01-05", model_name="m", k=2, source_days=[])


@pytest.mark.parametrize("module", TRAINERS)
def test_every_trainer_takes_the_shared_trainer_flags(module):
    parser = importlib.import_module(module).build_parser(get_config())
    args = parser.parse_args(["--snapshot", "s", "--checkpoint-dir", "c", "--force-retrain", "true", "--k", "5"])
    assert (args.snapshot, args.checkpoint_dir, args.force_retrain, args.k) == ("s", "c", True, 5)
    assert {"experiment", "tracking_uri", "model_name", "run_name"} <= set(vars(args))


def _data(day: str = "2026-01-05") -> TrainData:
    return TrainData(
        users=np.array([0, 1, 1], np.int64),
        items=np.array([0, 0, 1], np.int64),
        weights=np.ones(3, np.float32),
        test_users=np.array([0], np.int64),
        test_items=np.array([1], np.int64),
        user_ids=np.array([10, 11]),
        item_ids=np.array([20, 21]),
        popularity=np.array([2, 1]),
        manifest={"day": day, "content_hash": "h"},
        uri=f"memory://snapshot-{day}",
    )


class _Tracker:
    run_id, experiment_id = "run-1", "7"

    def __init__(self) -> None:
        self.finished: list[dict] = []

    def finish(self, metrics: dict, result: dict) -> None:
        self.finished.append(result)


def test_trainer_protocol_result_conforms_is_written_and_re_emitted_only_for_the_same_run(tmp_path):
    cfg = get_config()
    args = argparse.Namespace(force_retrain=True, fresh=False, k=5, model_name="unused")
    run = TrainerRun.open(cfg, "jobs.train", _data(), {"epochs": 3, "lr": 0.1}, str(tmp_path), epochs=3)
    assert run.reuse(cfg, args) is None  # nothing trained yet
    tracker = _Tracker()
    metrics = {"recall_at_5": 0.5, "ndcg_at_5": 0.25}
    result = run.result(tracker, "models:/m/1", metrics, 5, _data(), epochs_done=3, device="cpu")
    assert problems(TrainResult, result) == []
    assert (result["cached"], result["run_model_uri"], result["snapshot_day"]) == (
        False,
        "runs:/run-1/model",
        "2026-01-05",
    )
    run.finish(tracker, metrics, result)
    assert tracker.finished == [result]
    assert json.loads((tmp_path / RESULT).read_text()) == result
    assert run.reuse(cfg, args) == result  # a rerun re-emits the finished run
    assert (
        TrainerRun.open(cfg, "jobs.train", _data(), {"epochs": 4, "lr": 0.1}, str(tmp_path), epochs=4).reuse(cfg, args)
        is None
    )  # other hyper-parameters: another fingerprint
    assert run.reuse(cfg, argparse.Namespace(**{**vars(args), "fresh": True})) is None


def test_trainer_protocol_keys_and_default_folders():
    cfg = get_config()
    a = TrainerRun.open(
        cfg, "jobs.seq", _data(), {"epochs": 3, "seed": 1}, None, resumable={"seed": 1}, default_dir="seq"
    )
    b = TrainerRun.open(
        cfg, "jobs.seq", _data(), {"epochs": 5, "seed": 1}, None, resumable={"seed": 1}, default_dir="seq"
    )
    assert a.key != b.key and a.fingerprint == b.fingerprint  # epochs: in the cache key, not in the checkpoint's
    assert a.result_dir == storage.join(cfg.storage.zone("checkpoints"), f"seq-2026-01-05-{a.fingerprint[:12]}")
    other = TrainerRun.open(cfg, "jobs.train", _data(), {"epochs": 3, "seed": 1}, None, resumable={"seed": 1})
    assert other.fingerprint != a.fingerprint and other.key != a.key and other.result_dir is None


def test_the_importer_result_file_is_the_declared_result(tmp_path):
    """A real job's result file (``run_job`` adds ``cost``) against its declaration."""
    from datetime import UTC, datetime

    from jobs.importer import job as importer

    t = int(datetime(2000, 1, 1, 10, tzinfo=UTC).timestamp())
    src = tmp_path / "u.data"
    src.write_text(f"1\t10\t4\t{t}\n2\t10\t5\t{t + 60}\n1\t11\t3\t{t + 2 * 86_400}\n")
    out = tmp_path / "result.json"
    argv = ["movielens", "--source", str(src), "--landing", str(tmp_path / "landing"), "--result-file", str(out)]
    assert importer.main(argv) == 0
    result = json.loads(out.read_text())
    assert problems(results.ImportResult, result) == [] and result["days"] == 3
