"""jobs.core.config: profiles, environment overrides and error messages that name the dotted key."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import date
from pathlib import Path

import pytest
import yaml

from jobs.core import config as config_mod
from jobs.core.config import DEFAULT_CONFIG_PATH, REPO_ROOT, ZONES, ConfigError, get_config, load_config

pytestmark = pytest.mark.unit


def _load(**env: str):
    """Load the repository's configuration with exactly ``env`` as the environment."""
    return load_config(environ=dict(env))


def _write_yaml(tmp_path: Path, data: dict) -> Path:
    path = tmp_path / "pipeline.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def _minimal(**defaults) -> dict:
    base = {"storage": {"root": "data"}, "mlflow": {"tracking_uri": "http://mlflow:5000"}}
    base.update(defaults)
    return {"defaults": base, "profiles": {"local": {}}}


def _clean_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RECSYS")}
    env["PYTHONPATH"] = os.pathsep.join([str(REPO_ROOT), str(REPO_ROOT / "plugins")])
    return env


# --- profiles -----------------------------------------------------------------------------


def test_local_profile_is_default_and_zones_resolve_under_the_repo():
    cfg = _load()
    assert cfg.profile == "local"
    assert cfg.storage.root == ".local/data"
    assert cfg.storage.is_local
    root = Path(cfg.storage.root_path())
    assert root == REPO_ROOT / ".local" / "data"
    for zone in ZONES:
        assert Path(cfg.storage.zone(zone)).is_relative_to(root), zone
    assert cfg.storage.zone("landing") == f"{root}/landing/events"
    assert cfg.storage.zone("training") == f"{root}/training/snapshots"
    assert cfg.storage.zone("reports") == f"{root}/reports"
    assert cfg.storage.partition("curated", date(2026, 1, 2)) == f"{root}/curated/events/dt=2026-01-02"
    assert cfg.storage.partition("curated", "2026-01-02") == f"{root}/curated/events/dt=2026-01-02"
    assert cfg.spark.remote == "sc://127.0.0.1:15002"  # every job is a Spark Connect client
    assert cfg.spark.master == "local[2]"  # what the stack's Connect server runs
    assert cfg.spark.server_conf["spark.python.use.daemon"] == "false"
    assert cfg.spark.shuffle_partitions == 4
    assert cfg.spark.conf["spark.sql.session.timeZone"] == "UTC"
    assert cfg.training.launcher == "local"
    assert cfg.world.start_date == date(2026, 1, 1)


def test_loading_creates_nothing(tmp_path):
    path = _write_yaml(tmp_path, _minimal(storage={"root": str(tmp_path / "never")}))
    cfg = load_config(path, environ={})
    assert cfg.storage.zone("landing").startswith(str(tmp_path / "never"))
    assert not (tmp_path / "never").exists()


def test_unknown_zone_is_rejected():
    with pytest.raises(ConfigError, match=r"unknown data zone 'lake'; known zones: landing, "):
        _load().storage.zone("lake")


def test_cluster_profile_uses_object_store_kubernetes_and_a_spark_connect_endpoint():
    cfg = load_config(profile="cluster", environ={})
    assert cfg.profile == "cluster"
    assert cfg.storage.root == "s3://recsys-data/prod"
    assert not cfg.storage.is_local
    assert cfg.storage.zone("landing") == "s3://recsys-data/prod/landing/events"
    assert (
        cfg.storage.partition("quarantine", date(2026, 3, 1)) == "s3://recsys-data/prod/quarantine/events/dt=2026-03-01"
    )
    assert cfg.training.launcher == "kubernetes"
    assert cfg.training.gpus == 1
    assert cfg.training.requests.memory == "32Gi"
    assert cfg.training.tolerations[0].key == "nvidia.com/gpu"
    assert cfg.spark.remote == "sc://spark-connect.recsys.svc.cluster.local:15002"
    assert cfg.spark.shuffle_partitions == 200
    # deep merge: keys the profile does not name keep their defaults
    assert cfg.training.window_days == 7
    assert cfg.gate.k == 10
    assert cfg.ingest.poke_interval_s == 120
    assert cfg.ingest.wait_timeout_s == 3600


def test_profile_can_come_from_the_environment():
    assert _load(RECSYS_PROFILE="cluster").profile == "cluster"
    # an explicit argument wins over the environment
    assert load_config(profile="local", environ={"RECSYS_PROFILE": "cluster"}).profile == "local"


def test_a_spark_endpoint_that_is_not_spark_connect_is_refused():
    with pytest.raises(
        ConfigError, match=r"spark.remote: Value error, 'spark://h:7077' is not a Spark Connect endpoint"
    ):
        _load(RECSYS__SPARK__REMOTE="spark://h:7077")


def test_unknown_profile_names_the_known_profiles():
    with pytest.raises(ConfigError) as err:
        load_config(profile="staging", environ={})
    assert "'staging'" in str(err.value)
    assert "known profiles: cluster, local" in str(err.value)


def test_config_file_can_come_from_the_environment(tmp_path):
    path = _write_yaml(tmp_path, _minimal(gate={"k": 3}))
    cfg = load_config(environ={"RECSYS_CONFIG": str(path)})
    assert cfg.gate.k == 3
    assert cfg.storage.root_path() == str(REPO_ROOT / "data")


# --- environment overrides ----------------------------------------------------------------


def test_env_override_is_parsed_as_a_yaml_scalar():
    cfg = _load(RECSYS__SPARK__SHUFFLE_PARTITIONS="8")
    assert cfg.spark.shuffle_partitions == 8
    assert isinstance(cfg.spark.shuffle_partitions, int)
    cfg = _load(RECSYS__SPARK__MASTER="local[2]", RECSYS__DRIFT__COOLDOWN_HOURS="0.5")
    assert cfg.spark.master == "local[2]"
    assert cfg.drift.cooldown_hours == 0.5
    # other keys of the overridden section keep their values (deep merge)
    assert cfg.spark.server_memory == "3g"
    assert cfg.spark.server_conf["spark.ui.enabled"] == "true"


def test_env_override_applies_over_the_profile():
    cfg = load_config(profile="cluster", environ={"RECSYS__STORAGE__ROOT": "/tmp/elsewhere"})
    assert cfg.storage.root == "/tmp/elsewhere"
    assert cfg.storage.is_local
    assert cfg.training.launcher == "kubernetes"


def test_variables_without_the_double_underscore_prefix_are_ignored():
    cfg = _load(RECSYS_SPARK_MASTER="nonsense", RECSYS_SOMETHING="x")
    assert cfg.spark.master == "local[2]"


@pytest.mark.parametrize(
    ("env", "key"),
    [
        ({"RECSYS__SPARK__MASTR": "x"}, "spark.mastr"),
        ({"RECSYS__SPARKY__MASTER": "x"}, "sparky"),
        ({"RECSYS__TRAINING__REQUESTS__GPU": "1"}, "training.requests.gpu"),
    ],
)
def test_unknown_key_from_env_names_the_dotted_key(env, key):
    with pytest.raises(ConfigError) as err:
        load_config(environ=env)
    message = str(err.value)
    assert f"  {key}:" in message
    assert "Extra inputs are not permitted" in message
    assert "profile local" in message


def test_unknown_key_in_yaml_names_the_dotted_key(tmp_path):
    data = _minimal()
    data["defaults"]["spark"] = {"mastr": "local[1]"}
    path = _write_yaml(tmp_path, data)
    with pytest.raises(ConfigError) as err:
        load_config(path, environ={})
    assert "spark.mastr" in str(err.value)
    assert str(path) in str(err.value)


def test_every_offending_key_is_named():
    with pytest.raises(ConfigError) as err:
        _load(RECSYS__GATE__K="0", RECSYS__SPARK__MASTR="x")
    assert "gate.k" in str(err.value)
    assert "spark.mastr" in str(err.value)


def test_replaced_gate_rules_name_their_replacement():
    with pytest.raises(ConfigError, match=r"gate\.min_lift_over_popularity was replaced by gate\.baseline_margin"):
        _load(RECSYS__GATE__MIN_LIFT_OVER_POPULARITY="1.0")


@pytest.mark.parametrize(
    ("env", "key", "hint"),
    [
        ({"RECSYS__GATE__K": "0"}, "gate.k", "greater than or equal to 1"),
        ({"RECSYS__TRAINING__LAUNCHER": "docker"}, "training.launcher", "'local' or 'kubernetes'"),
        ({"RECSYS__SPARK__SHUFFLE_PARTITIONS": "many"}, "spark.shuffle_partitions", "integer"),
        ({"RECSYS__INGEST__LANDING_FORMAT": "parquet"}, "ingest.landing_format", "'jsonl' or 'csv'"),
        ({"RECSYS__WORLD__START_DATE": "yesterday"}, "world.start_date", "date"),
        ({"RECSYS__INGEST__MAX_QUARANTINE_SHARE": "1.5"}, "ingest.max_quarantine_share", "less than or equal to 1"),
    ],
)
def test_bad_value_names_the_key(env, key, hint):
    with pytest.raises(ConfigError) as err:
        load_config(environ=env)
    line = next((ln for ln in str(err.value).splitlines() if ln.strip().startswith(f"{key}:")), None)
    assert line is not None, str(err.value)
    assert hint in line


def test_bad_value_in_yaml_names_the_key(tmp_path):
    path = _write_yaml(tmp_path, _minimal(training={"launcher": "docker"}, gate={"k": 0}))
    with pytest.raises(ConfigError) as err:
        load_config(path, environ={})
    assert "training.launcher" in str(err.value)
    assert "gate.k" in str(err.value)


def test_ingest_ratio_bounds_must_be_ordered():
    with pytest.raises(ConfigError) as err:
        _load(RECSYS__INGEST__MIN_RATIO_TO_RECENT="3.0")
    assert "  ingest:" in str(err.value)
    assert "min_ratio_to_recent must be below max_ratio_to_recent" in str(err.value)
    with pytest.raises(ConfigError, match="min_ratio_to_recent must be below"):
        _load(RECSYS__INGEST__MIN_RATIO_TO_RECENT="2", RECSYS__INGEST__MAX_RATIO_TO_RECENT="1")
    cfg = _load(RECSYS__INGEST__MIN_RATIO_TO_RECENT="0.5", RECSYS__INGEST__MAX_RATIO_TO_RECENT="2")
    assert (cfg.ingest.min_ratio_to_recent, cfg.ingest.max_ratio_to_recent) == (0.5, 2.0)


def test_drift_psi_thresholds_must_be_ordered():
    with pytest.raises(ConfigError, match="psi_warn must not exceed psi_alert"):
        _load(RECSYS__DRIFT__PSI_WARN="0.5")


def test_empty_key_segment_in_override_is_rejected():
    with pytest.raises(ConfigError, match="RECSYS__SPARK____MASTER has an empty key segment"):
        _load(RECSYS__SPARK____MASTER="x")


def test_override_into_a_scalar_is_rejected():
    with pytest.raises(ConfigError) as err:
        _load(RECSYS__GATE__K__X="1")
    assert "gate.k" in str(err.value)


# --- files --------------------------------------------------------------------------------


def test_missing_file_is_named(tmp_path):
    missing = tmp_path / "nope.yaml"
    with pytest.raises(ConfigError, match="configuration file not found") as err:
        load_config(missing, environ={})
    assert str(missing) in str(err.value)


def test_invalid_yaml_is_reported(tmp_path):
    path = tmp_path / "broken.yaml"
    path.write_text("defaults: {storage: [unclosed\n")
    with pytest.raises(ConfigError, match="is not valid YAML"):
        load_config(path, environ={})


def test_unexpected_top_level_key_is_rejected(tmp_path):
    data = _minimal()
    data["extras"] = {}
    with pytest.raises(ConfigError, match="top level must hold only 'defaults' and 'profiles'"):
        load_config(_write_yaml(tmp_path, data), environ={})


def test_missing_required_section_is_named(tmp_path):
    path = _write_yaml(tmp_path, {"defaults": {"storage": {"root": "x"}}, "profiles": {"local": None}})
    with pytest.raises(ConfigError) as err:
        load_config(path, environ={})
    assert "  mlflow: Field required" in str(err.value)


def test_repository_config_is_the_default():
    assert DEFAULT_CONFIG_PATH == REPO_ROOT / "include" / "config" / "pipeline.yaml"
    assert DEFAULT_CONFIG_PATH.is_file()


def test_sections_are_frozen():
    cfg = _load()
    with pytest.raises(ValueError, match="frozen"):
        cfg.gate.k = 3


# --- get_config ---------------------------------------------------------------------------


def test_get_config_follows_the_environment(monkeypatch):
    for name in [k for k in os.environ if k.startswith("RECSYS")]:
        monkeypatch.delenv(name)
    config_mod._cached.cache_clear()
    first = get_config()
    assert first.profile == "local"
    assert get_config() is first  # cached
    monkeypatch.setenv("RECSYS__SPARK__SHUFFLE_PARTITIONS", "8")
    assert get_config().spark.shuffle_partitions == 8
    monkeypatch.setenv("RECSYS_PROFILE", "cluster")
    assert get_config().storage.root.startswith("s3://")
    config_mod._cached.cache_clear()


# --- CLI ----------------------------------------------------------------------------------


def _cli(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "jobs.core.config", *args],
        cwd=REPO_ROOT,
        env={**_clean_env(), **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_cli_prints_one_key():
    proc = _cli("--get", "storage.root")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == ".local/data"
    proc = _cli("--get", "spark.shuffle_partitions", RECSYS__SPARK__SHUFFLE_PARTITIONS="8")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "8"


def test_cli_prints_the_whole_profile_as_yaml():
    proc = _cli("--profile", "cluster")
    assert proc.returncode == 0, proc.stderr
    data = yaml.safe_load(proc.stdout)
    assert data["profile"] == "cluster"
    assert data["training"]["launcher"] == "kubernetes"


def test_cli_bad_override_exits_2_naming_the_key():
    proc = _cli("--get", "storage.root", RECSYS__SPARK__MASTR="x")
    assert proc.returncode == 2
    assert "spark.mastr" in proc.stderr
    assert proc.stdout == ""
