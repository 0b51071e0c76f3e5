"""Generate the docs' reference tables from the code and the recorded results (run by `make docs`).

``python scripts/docs.py`` writes Markdown snippets into ``docs/_generated/`` (ignored by git,
rebuilt on every build, so they cannot go stale); the pages include them with
``--8<-- "docs/_generated/NAME.md"`` (pymdownx.snippets). Sources:

* ``config.md``: the pydantic model of ``jobs/core/config.py`` (type, constraints, description)
  and the values ``include/config/pipeline.yaml`` resolves to per profile; a field without a
  description takes the comment on its line in the YAML.
* ``zones.md``: the zones of ``jobs.core.config.ZONES``, their addresses from ``jobs.core.catalog``.
* ``reliability.md``: ``docs/data/reliability.json``, a record of the report that
  ``tests/reliability/harness.py`` writes (``--record-reliability PATH`` replaces it).
* ``benchmarks.md``, ``quality.md``: ``docs/data/benchmarks.json``, record rows of
  ``benchmarks/results/results.json`` (``--record-benchmarks PATH`` replaces the rows of the benchmarks it holds; the others stay).
* ``scale.md``: ``docs/data/scale.json``, the scale benchmark's run the docs quote (a copy of
  ``benchmarks/results/scale.json``), per stage and size.
* ``stages.md``: the stage packages under ``jobs/`` and the first line of each ``job.py``.

Every source is checked on the way: an undocumented zone, a reliability case whose test does not
exist, or a record in the wrong shape fails the build.
"""

from __future__ import annotations

import argparse
import ast
import functools
import json
import re
import sys
import types
import typing
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

OUT = REPO / "docs" / "_generated"
DATA = REPO / "docs" / "data"
RELIABILITY = DATA / "reliability.json"
BENCHMARKS = DATA / "benchmarks.json"
SCALE = DATA / "scale.json"
SAMPLE_DAY = "2026-01-08"

# What the code cannot say about a zone: who writes it and what it holds. Keyed by every name of
# jobs.core.config.ZONES; a zone added there without a line here fails the build.
ZONE_NOTES: dict[str, tuple[str, str]] = {
    "landing": (
        "upstream, `jobs.sim` or `jobs.importer`",
        "JSON lines or CSV as delivered, plain or gzip; `_SUCCESS` written last",
    ),
    "curated": (
        "`jobs.ingest` (verdict: `jobs.validate`)",
        "Parquet, typed, deduplicated; `_SUCCESS` manifest; `_VALIDATION` verdict",
    ),
    "quarantine": ("`jobs.ingest`", "rejected rows with `reasons`, `source_file`, the raw line"),
    "training": ("`jobs.snapshot`", "train/test split of a window of validated days (`_w=` window length)"),
    "recommendations": (
        "`jobs.score`",
        "`user_id, rank, item_id, score, model_version, model_run_id`: what users were served",
    ),
    "rescored": ("`jobs.score` (`rescore: true`)", "the same columns: a served day scored again on purpose"),
    "reports": ("`jobs.validate`, `jobs.monitor`", "`report.html` and its twin `report.json` per kind and day"),
    "ground_truth": ("`jobs.sim`", "true factors in force each day (`truth.npz`), scenario log"),
    "checkpoints": ("trainers (`jobs.train`, `jobs.seq`)", "epoch checkpoints, so a retried run resumes"),
    "ledger": (
        "every job (`jobs.core.cli.run_job`)",
        "what a job cost: wall, CPU, GPU seconds, peak memory, rows; a rerun replaces its entry",
    ),
}


class DocsError(RuntimeError):
    """A source of the docs is missing, malformed or names something that does not exist."""


def _cell(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    return text.replace("|", "\\|").replace("\n", " ")


# ---------------------------------------------------------------------------- configuration


def _type_name(annotation: Any) -> str:
    origin = typing.get_origin(annotation)
    if origin is typing.Literal:
        return " \\| ".join(repr(a) for a in typing.get_args(annotation))
    if origin in (typing.Union, types.UnionType):
        return " \\| ".join(_type_name(a) for a in typing.get_args(annotation))
    if origin is not None:
        args = ", ".join(_type_name(a) for a in typing.get_args(annotation))
        return f"{getattr(origin, '__name__', str(origin))}[{args}]"
    if annotation is type(None):
        return "None"
    return getattr(annotation, "__name__", str(annotation))


def _constraints(field: Any) -> str:
    symbols = {"ge": "≥", "gt": ">", "le": "≤", "lt": "<", "min_length": "min length"}
    out = []
    for meta in field.metadata:
        for attr, symbol in symbols.items():
            value = getattr(meta, attr, None)
            if value is not None:
                out.append(f"{symbol} {value}")
    return ", ".join(out)


def _yaml_comments(path: Path) -> dict[str, str]:
    """``section.key → comment`` of the inline comments in the ``defaults`` block of the YAML; a
    comment-only line aligned with the previous inline comment continues it."""
    comments: dict[str, str] = {}
    section = None
    in_defaults = False
    last: tuple[str, int] | None = None  # the key whose comment may continue, and its column
    for line in path.read_text().splitlines():
        stripped = line.strip()
        if stripped.startswith("#"):
            if last and line.index("#") == last[1]:
                comments[last[0]] += " " + stripped.lstrip("#").strip()
            continue
        last = None
        if not stripped:
            continue
        indent = len(line) - len(line.lstrip())
        if indent == 0:
            in_defaults = line.startswith("defaults:")
            continue
        if not in_defaults:
            continue
        match = re.match(r"\s*([A-Za-z_]\w*):[^#]*?(?:#\s*(.*))?$", line)
        if not match:
            continue
        key, comment = match.group(1), (match.group(2) or "").strip()
        if indent == 2:
            section = key
        elif indent == 4 and section and comment:
            comments[f"{section}.{key}"] = comment
            last = (f"{section}.{key}", line.index("#"))
    return comments


def config_reference() -> str:
    from jobs.core.config import DEFAULT_CONFIG_PATH, PipelineConfig, load_config

    profiles = {name: load_config(profile=name, environ={}) for name in ("local", "cluster")}
    dumps = {name: cfg.model_dump(mode="json") for name, cfg in profiles.items()}
    comments = _yaml_comments(DEFAULT_CONFIG_PATH)
    lines = []
    for section, sfield in PipelineConfig.model_fields.items():
        model = sfield.annotation
        if not isinstance(model, type) or not hasattr(model, "model_fields"):
            continue
        doc = " ".join((model.__doc__ or "").split("\n\n")[0].split())
        lines += [f"### `{section}`", ""]
        if doc:
            lines += [doc, ""]
        lines += ["| key | type | local | cluster | bounds | meaning |", "|---|---|---|---|---|---|"]
        for name, field in model.model_fields.items():
            key = f"{section}.{name}"
            local, cluster = (dumps[p][section][name] for p in ("local", "cluster"))
            cluster_cell = "same" if cluster == local else f"`{_cell(cluster)}`"
            meaning = field.description or comments.get(key, "")
            lines.append(
                f"| `{key}` | {_type_name(field.annotation)} | `{_cell(local)}` | {cluster_cell} | "
                f"{_constraints(field)} | {_cell(meaning)} |"
            )
        lines.append("")
    return "\n".join(lines)


# ---------------------------------------------------------------------------- zones


def zones_table() -> str:
    from jobs.core import catalog
    from jobs.core.config import ZONES, load_config

    missing, extra = set(ZONES) - set(ZONE_NOTES), set(ZONE_NOTES) - set(ZONES)
    if missing or extra:
        raise DocsError(f"scripts/docs.py ZONE_NOTES out of step with jobs.core.config.ZONES: {missing=} {extra=}")
    cfg = load_config(profile="local", environ={})
    root = cfg.storage.root_path() + "/"
    day = SAMPLE_DAY
    example = {
        "training": catalog.snapshot_uri(cfg, day, 7),
        "reports": catalog.report_html(cfg, "validation", day),
        "ground_truth": f"{cfg.storage.zone('ground_truth')}/dt={day}/truth.npz",
        "checkpoints": f"{cfg.storage.zone('checkpoints')}/<run>/",
        "ledger": f"{cfg.storage.zone('ledger')}/<stage>/<day or run>.json",
    }
    lines = [
        f"| zone | address under the root (day {day}) | written by | holds |",
        "|---|---|---|---|",
    ]
    for zone in ZONES:
        where = example.get(zone) or catalog.partition(cfg, zone, day) + "/"
        writer, shape = ZONE_NOTES[zone]
        lines.append(f"| `{zone}` | `{where.removeprefix(root)}` | {writer} | {shape} |")
    kinds = ", ".join(f"`{k}`" for k in catalog.REPORT_KINDS)
    lines += ["", f"Report kinds: {kinds}. Validation verdict marker: `{catalog.VALIDATION_MARKER}`.", ""]
    return "\n".join(lines)


# ---------------------------------------------------------------------------- reliability


def _test_file(name: str) -> str:
    hits = [p for p in sorted((REPO / "tests" / "reliability").glob("test_*.py")) if f"def {name}(" in p.read_text()]
    if len(hits) != 1:
        raise DocsError(
            f"{RELIABILITY.relative_to(REPO)}: test {name!r} found in {len(hits)} files of tests/reliability"
        )
    return str(hits[0].relative_to(REPO))


@functools.lru_cache
def _harness_contract() -> tuple[tuple[str, ...], tuple[str, ...]]:
    """The fields of ``CaseResult`` and the summed ``COLUMNS`` of tests/reliability/harness.py,
    read without importing it (it imports the whole test stack)."""
    fields: tuple[str, ...] = ()
    columns: tuple[str, ...] = ()
    for node in ast.parse((REPO / "tests" / "reliability" / "harness.py").read_text()).body:
        if isinstance(node, ast.ClassDef) and node.name == "CaseResult":
            fields = tuple(
                n.target.id for n in node.body if isinstance(n, ast.AnnAssign) and isinstance(n.target, ast.Name)
            )
        elif isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "COLUMNS" for t in node.targets):
            columns = tuple(ast.literal_eval(node.value))
    if not fields or not columns:
        raise DocsError("tests/reliability/harness.py: CaseResult or COLUMNS not found")
    return fields, columns


def check_reliability(report: dict[str, Any]) -> None:
    """Raise DocsError unless ``report`` has the shape of tests/reliability/harness.py's Report."""
    fields, columns = _harness_contract()
    if report.get("schema") != 1 or not isinstance(report.get("cases"), list) or not report["cases"]:
        raise DocsError("reliability report: schema 1 with a non-empty 'cases' list expected")
    for case in report["cases"]:
        if set(case) != set(fields):
            raise DocsError(f"reliability case {case.get('case')!r}: keys {sorted(case)} != {sorted(fields)}")
    totals = {c: sum(case[c] for case in report["cases"]) for c in columns}
    totals["cases"] = len(report["cases"])
    if report.get("totals") != totals:
        raise DocsError(f"reliability report: totals {report.get('totals')} != the sum of its cases {totals}")


def reliability_table(path: Path = RELIABILITY) -> str:
    report = json.loads(path.read_text())
    check_reliability(report)
    lines = [
        f"Recorded {report['generated_at'][:10]} ({len(report['cases'])} cases, `{path.relative_to(REPO)}`).",
        "",
        "| case | test | faults | recovered | rows | lost | dup | s |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for c in report["cases"]:
        test = f"{_test_file(c['test'])}::{c['test']}"
        if c["skipped"]:
            lines.append(f"| {_cell(c['case'])} | `{test}` | skipped: {_cell(c['skipped'])} | | | | | |")
            continue
        lines.append(
            f"| {_cell(c['case'])} | `{test}` | {c['faults_injected']} | {c['runs_recovered']} | "
            f"{c['rows_expected']:,} | {c['rows_lost']} | {c['rows_duplicated']} | {c['seconds']:.1f} |"
        )
    t = report["totals"]
    lines.append(
        f"| **total** | | {t['faults_injected']} | {t['runs_recovered']} | {t['rows_expected']:,} | "
        f"{t['rows_lost']} | {t['rows_duplicated']} | |"
    )
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------- benchmarks


def check_benchmarks(data: dict[str, Any]) -> None:
    """Raise DocsError unless ``data`` has the shape of benchmarks/__main__.py's results.json."""
    if set(data) != {"rows", "runs"} or not data["rows"]:
        raise DocsError("benchmark record: {'rows': [...], 'runs': {...}} with rows expected")
    row_keys = set(_bench_literal("ROW_KEYS"))
    for row in data["rows"]:
        if set(row) != row_keys:
            raise DocsError(f"benchmark row {row.get('metric')!r}: keys {sorted(row)} != {sorted(row_keys)}")
        if row["benchmark"] not in data["runs"]:
            raise DocsError(f"benchmark row {row['metric']!r}: no run of {row['benchmark']!r} recorded")


def _bench_literal(name: str) -> Any:
    """A literal of benchmarks/__main__.py (``BENCHMARKS``, ``ROW_KEYS``), read without importing it."""
    for node in ast.parse((REPO / "benchmarks" / "__main__.py").read_text()).body:
        target = getattr(node, "target", None) or (node.targets[0] if isinstance(node, ast.Assign) else None)
        if isinstance(target, ast.Name) and target.id == name:
            return ast.literal_eval(node.value)
    raise DocsError(f"benchmarks/__main__.py defines no {name}")


def _registered_benchmarks() -> list[tuple[str, str]]:
    out = []
    for name in _bench_literal("BENCHMARKS"):
        module = REPO / "benchmarks" / f"bench_{name}.py"
        doc = ast.get_docstring(ast.parse(module.read_text())) or ""
        out.append((name, " ".join(doc.split("\n\n")[0].split())))
    return out


def benchmarks_table(path: Path = BENCHMARKS) -> str:
    """The registered benchmarks, then the recorded rows of every benchmark but ``quality`` (its
    own tables follow on the page), each with the run it came from."""
    lines = ["| `--only` | module | measures |", "|---|---|---|"]
    for name, doc in _registered_benchmarks():
        lines.append(f"| `{name}` | `benchmarks/bench_{name}.py` | {_cell(doc)} |")
    data = json.loads(path.read_text())
    check_benchmarks(data)
    rows = [row for row in data["rows"] if row["benchmark"] != "quality"]
    if rows:
        lines += ["", "Recorded results (`docs/data/benchmarks.json`):", ""]
        lines += [
            "| benchmark | metric | value | unit | reference | ratio | note |",
            "|---|---|---:|---|---:|---:|---|",
        ]
        for row in rows:
            cells = [row[k] for k in ("benchmark", "metric", "value", "unit", "reference", "ratio", "note")]
            lines.append("| " + " | ".join(_cell("" if c is None else str(c)) for c in cells) + " |")
        for name in sorted({row["benchmark"] for row in rows}):
            run = data["runs"][name]
            lines.append(
                f"\n`{name}`: {'quick' if run.get('quick') else 'full'} run finished {run.get('finished', '?')}, "
                f"{run.get('seconds', '?')} s, {run.get('status', '?')}."
            )
    return "\n".join(lines) + "\n"


_QUALITY = re.compile(
    r"^(?P<ds>\S+) (?P<proto>\S+) (?P<metric>NDCG|Recall)@(?P<k>\d+): (?P<model>.+?) vs (?P<base>.+)$"
)
_NOTE = re.compile(
    r"^Δ (?P<diff>\S+) \[(?P<low>\S+), (?P<high>\S+)\] paired 95% CI, (?P<users>\d+) users; (?P<settings>.*)$"
)


def quality_tables(path: Path = BENCHMARKS) -> str:
    data = json.loads(path.read_text())
    check_benchmarks(data)
    runs = data["runs"]
    tables: dict[tuple[str, str], dict[str, dict[str, Any]]] = {}
    published = []
    for row in data["rows"]:
        if row["benchmark"] != "quality":
            continue
        m = _QUALITY.match(row["metric"])
        if not m:
            raise DocsError(f"quality row {row['metric']!r} does not parse")
        if m["model"].endswith("(ours)"):
            published.append((m, row))
            continue
        n = _NOTE.match(row["note"])
        if not n:
            raise DocsError(f"quality row {row['metric']!r}: note {row['note']!r} does not parse")
        entry = tables.setdefault((m["ds"], m["proto"]), {}).setdefault(m["model"], {"base": m["base"], "k": m["k"]})
        entry[m["metric"]] = (row["value"], f"{n['diff']} [{n['low']}, {n['high']}]")
        entry["users"], entry["settings"] = int(n["users"]), n["settings"]
    run = runs.get("quality", {})
    took = f", {run['seconds']:.0f} s" if run.get("seconds") else ""
    mode = "quick" if run.get("quick") else "full"
    lines = [f"Recorded {run.get('finished', '?')} ({mode} run{took}; `{path.relative_to(REPO)}`).", ""]
    for (ds, proto), models in tables.items():
        first = next(iter(models.values()))
        k, base = first["k"], first["base"]
        lines += [
            f"**{ds}, {proto}** ({first['users']:,} evaluated users; Δ = model − {base}, paired bootstrap 95% CI)",
            "",
            f"| model | NDCG@{k} | Δ NDCG [95% CI] | Recall@{k} | Δ Recall [95% CI] | settings |",
            "|---|---:|---:|---:|---:|---|",
        ]
        for model, e in models.items():
            (nd, ndd), (rc, rcd) = e["NDCG"], e["Recall"]
            lines.append(f"| {model} | {nd:.4f} | {ndd} | {rc:.4f} | {rcd} | {_cell(e['settings'])} |")
        lines.append("")
    if published:
        lines += ["| ours | metric | value | published | source |", "|---|---|---:|---:|---|"]
        for m, row in published:
            lines.append(
                f"| {m['model'].removesuffix(' (ours)')} ({m['ds']}, {m['proto']}) | {m['metric']}@{m['k']} | "
                f"{row['value']:.4f} | {row['reference']:.4f} | {_cell(row['note'])} |"
            )
        lines.append("")
    return "\n".join(lines)


# ---------------------------------------------------------------------------- scale


SCALE_STAGES = ("ingest", "validate", "snapshot", "train", "evaluate", "score", "monitor")


def scale_table(path: Path = SCALE) -> str:
    """Per stage and size, what the recorded scale run measured (``docs/data/scale.json``)."""
    data = json.loads(path.read_text())
    missing = [s for s in SCALE_STAGES if s not in data.get("stages", {})]
    if missing or not data.get("sizes"):
        raise DocsError(f"{path.relative_to(REPO)}: no sizes, or no rows for {missing}")
    machine = data.get("machine", {})
    load = machine.get("load_average_at_start")
    lines = [
        f"Recorded run: `{data.get('produced_by', 'python -m benchmarks --only scale')}` ({data.get('mode', '?')}, "
        f"{data.get('seconds', 0) / 60:.1f} min; {machine.get('cpus', '?')} CPUs, Spark "
        f"{machine.get('spark_master', '?')}" + (f", load average {load[0]:.1f} at the start" if load else "") + "; "
        f"a {data['window_days']}-day window; `{path.relative_to(REPO)}`). CPU = the job's and the Spark "
        "server's; RSS = peak of the job's process tree / of the server.",
        "",
        "| stage | events/day | users × items | wall s | CPU s | job RSS MiB | server RSS MiB | MB written |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for stage in SCALE_STAGES:
        for row in data["stages"][stage]:
            lines.append(
                f"| {stage} | {row['events_per_day']:,} | {row['users']:,} × {row['items']:,} | {row['wall_s']:.1f} | "
                f"{row['cpu_s']:.1f} | {row.get('peak_rss_mib', 0):,.0f} | {row.get('server_peak_rss_mib', 0):,.0f} | "
                f"{row.get('bytes_written', 0) / 1e6:,.1f} |"
            )
    failures = data.get("failures") or []
    lines += ["", f"Failures: {len(failures)}" + ("" if not failures else f" ({_cell(failures)})"), ""]
    from benchmarks.scale_fit import check_summary, fit_all, load_coefficients, self_check

    coeffs = load_coefficients(path)
    laws, summary = fit_all(coeffs), check_summary(self_check(coeffs))
    lines += [
        "Growth exponent k of wall = fixed + b · x^k over these sizes (`benchmarks.scale_fit`; x = the "
        "stage's driver) and the self-check's worst judged error per stage (refitted without the largest "
        f"size, predicting it; goal ≤ {summary['goal']:.0%}: "
        f"{'PASS' if summary['passed'] else 'FAIL'}):",
        "",
        "| stage | driver | k (wall) | self-check worst error |",
        "|---|---|---:|---:|",
    ]
    for stage in SCALE_STAGES:
        law, worst = laws[stage]["wall_s"], summary["worst_by_stage"].get(stage)
        lines.append(f"| {stage} | {law.driver} | {law.k:.2f} | {'-' if worst is None else f'{worst:.0%}'} |")
    return "\n".join([*lines, ""])


# ---------------------------------------------------------------------------- stages


def stages_table() -> str:
    lines = ["| package | run as | entry module | what it does |", "|---|---|---|---|"]
    for job in sorted((REPO / "jobs").glob("*/job.py")):
        pkg = job.parent.name
        doc = (ast.get_docstring(ast.parse(job.read_text())) or "").split("\n\n")[0]
        lines.append(
            f"| `jobs/{pkg}/` | `python -m jobs.{pkg}` | `jobs/{pkg}/job.py` | {_cell(' '.join(doc.split()))} |"
        )
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------- references

# What the pages may name: repository paths (and test nodes), Python modules (and a name in
# them), make targets. A name with a placeholder (``jobs/<stage>/job.py``) must match something.
PATH_ROOTS = ("dags", "plugins", "jobs", "include", "scripts", "tests", "benchmarks", "docs", ".ci")
ROOT_FILES = (
    "Makefile",
    "Dockerfile",
    "Dockerfile.train",
    "requirements.in",
    "requirements.txt",
    "pyproject.toml",
    "mkdocs.yml",
    "README.md",
)
MODULE_ROOTS = {
    "jobs": "jobs",
    "recsys_airflow": "plugins/recsys_airflow",
    "benchmarks": "benchmarks",
    "scripts": "scripts",
}
_PATH = re.compile(
    r"(?<![\w./-])((?:" + "|".join(re.escape(r) for r in PATH_ROOTS) + r")/[\w./<>*{}=\[\]-]*"
    r"|(?:" + "|".join(re.escape(f) for f in ROOT_FILES) + r")(?![\w.]))(?:::(\w+))?"
)
_BARE_TEST = re.compile(r"(?<![\w./-])(test_\w+\.py)(?:::(\w+))?")
_MODULE = re.compile(r"(?<![\w./<-])((?:" + "|".join(MODULE_ROOTS) + r")(?:\.\w+)+)")
_CODE = re.compile(r"```[^\n]*\n(.*?)```|`([^`\n]+)`", re.S)
_MAKE = re.compile(r"(?<![\w-])make\s+(?:-\w+\s+)*([a-z][\w-]*)")
_FILE_SUFFIXES = (".py", ".md", ".json", ".yaml", ".yml", ".html", ".npz", ".txt", ".in", ".toml")


@functools.lru_cache
def _ignored_prefixes(root: Path) -> tuple[str, ...]:
    """Folders .gitignore names (``benchmarks/results/``): outputs a page may name before they exist."""
    lines = (root / ".gitignore").read_text().splitlines() if (root / ".gitignore").exists() else []
    return tuple(line.strip().lstrip("/") for line in lines if line.strip().endswith("/") and "*" not in line)


def _path_problem(root: Path, path: str, node: str | None) -> str | None:
    path = path.rstrip(".,:;)")
    if path.startswith("docs/_generated/") and path != "docs/_generated/":
        name = path.removeprefix("docs/_generated/").removesuffix(".md")
        return None if name in GENERATORS else f"{path}: no generator {name!r} in scripts/docs.py"
    if path.startswith(_ignored_prefixes(root)) or path in _ignored_prefixes(root):
        return None
    if re.search(r"[<>{}*\[\]]", path):
        pattern = re.sub(r"<[^>/]*>|\{[^}/]*\}|\[[^\]/]*\]", "*", path).rstrip("/")
        return None if any(root.glob(pattern)) else f"{path}: nothing matches"
    target = root / path
    if not target.exists():
        return f"{path}: no such file or folder"
    if node and not (target.suffix == ".py" and _defines(target, node)):
        return f"{path}::{node}: no such test"
    return None


def _defines(source: Path, name: str) -> bool:
    return bool(re.search(rf"^\s*(?:async )?(?:def|class) {name}\b", source.read_text(), re.M))


def _bare_test_problem(root: Path, name: str, node: str | None) -> str | None:
    hits = sorted((root / "tests").rglob(name))
    if not hits:
        return f"{name}: no such test file under tests/"
    if node and not any(_defines(h, node) for h in hits):
        return f"{name}::{node}: no such test"
    return None


@functools.lru_cache
def _top_level_names(source: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.parse(source.read_text()).body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            names.add(node.name)
        elif isinstance(node, ast.Assign):
            names.update(t.id for t in node.targets if isinstance(t, ast.Name))
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            names.add(node.target.id)
        elif isinstance(node, ast.Import | ast.ImportFrom):
            names.update((a.asname or a.name).split(".")[0] for a in node.names)
    return names


def _module_problem(root: Path, dotted: str) -> str | None:
    if dotted.endswith(_FILE_SUFFIXES):
        return None
    first, *rest = dotted.split(".")
    base = root / MODULE_ROOTS[first]
    found = 0  # how many parts after the root name a module or package
    for i in range(1, len(rest) + 1):
        stem = base.joinpath(*rest[:i])
        if stem.with_suffix(".py").is_file() or stem.is_dir():
            found = i
        else:
            break
    if not base.is_dir() or (found == 0 and rest):
        if not (base / "__init__.py").exists() or rest[0] not in _top_level_names(base / "__init__.py"):
            return f"{dotted}: no such module"
        return None
    if found == len(rest):
        return None
    stem = base.joinpath(*rest[:found]) if found else base
    source = stem.with_suffix(".py") if stem.with_suffix(".py").is_file() else stem / "__init__.py"
    attr = rest[found]
    if not source.is_file() or attr not in _top_level_names(source):
        return f"{dotted}: {'.'.join([first, *rest[:found]])} has no {attr!r}"
    return None


def _make_targets(root: Path) -> set[str]:
    return set(re.findall(r"^([a-z][\w-]*):", (root / "Makefile").read_text(), re.M))


def check_references(pages: list[Path], root: Path = REPO) -> list[str]:
    """Every repository path, test, module and make target the pages name that does not exist.

    Args:
        pages: Markdown files (README.md, docs/*.md) to read.
        root: the repository the names must exist in.

    Returns:
        ``"page:line: name: why"`` per stale name, in page order.
    """
    targets = _make_targets(root)
    problems = []
    for page in pages:
        text = page.read_text()
        seen: set[tuple[int, str]] = set()

        def report(pos: int, problem: str | None, *, _text: str = text, _page: Path = page, _seen=seen) -> None:
            line = _text.count("\n", 0, pos) + 1
            if problem and (line, problem) not in _seen:
                _seen.add((line, problem))
                problems.append(f"{_page.name}:{line}: {problem}")

        for m in _PATH.finditer(text):
            report(m.start(), _path_problem(root, m[1], m[2]))
        for m in _BARE_TEST.finditer(text):
            report(m.start(), _bare_test_problem(root, m[1], m[2]))
        for m in _MODULE.finditer(text):
            report(m.start(), _module_problem(root, m[1]))
        for code in _CODE.finditer(text):
            start = code.start(1) if code[1] is not None else code.start(2)
            for m in _MAKE.finditer(code[1] if code[1] is not None else code[2]):
                if m[1] not in targets:
                    report(start + m.start(), f"make {m[1]}: no such target in the Makefile")
    return problems


def doc_pages(root: Path = REPO) -> list[Path]:
    """README.md and the hand-written pages of the site (not the generated snippets)."""
    return [root / "README.md", *sorted((root / "docs").glob("*.md"))]


# ---------------------------------------------------------------------------- main

GENERATORS = {
    "config": config_reference,
    "zones": zones_table,
    "reliability": reliability_table,
    "benchmarks": benchmarks_table,
    "quality": quality_tables,
    "scale": scale_table,
    "stages": stages_table,
}


def merge_benchmarks(record: dict[str, Any], results: dict[str, Any]) -> dict[str, Any]:
    """The benchmark record with ``results``' benchmarks replaced: their rows and runs from
    ``results``, every other benchmark's as recorded (a ``--only NAME`` run records NAME alone)."""
    names = {row["benchmark"] for row in results["rows"]}
    rows = [row for row in record.get("rows", []) if row["benchmark"] not in names] + results["rows"]
    runs = {name: run for name, run in record.get("runs", {}).items() if name not in names} | results["runs"]
    return {"rows": rows, "runs": runs}


def _record(source: Path, target: Path, check: Any) -> None:
    data = json.loads(source.read_text())
    check(data)
    if target == BENCHMARKS and target.exists():
        data = merge_benchmarks(json.loads(target.read_text()), data)
        check(data)
    target.write_text(json.dumps(data, indent=2, sort_keys=True, default=str) + "\n")
    print(f"recorded {source} → {target.relative_to(REPO)}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=OUT)
    ap.add_argument("--record-reliability", type=Path, metavar="REPORT", help="replace docs/data/reliability.json")
    ap.add_argument(
        "--record-benchmarks",
        type=Path,
        metavar="RESULTS",
        help="record its benchmarks in docs/data/benchmarks.json (the others' rows stay)",
    )
    args = ap.parse_args(argv)
    try:
        if args.record_reliability:
            _record(args.record_reliability, RELIABILITY, check_reliability)
        if args.record_benchmarks:
            _record(args.record_benchmarks, BENCHMARKS, check_benchmarks)
        stale = check_references(doc_pages())
        if stale:
            raise DocsError("stale names in the docs:\n  " + "\n  ".join(stale))
        args.out.mkdir(parents=True, exist_ok=True)
        for name, generate in GENERATORS.items():
            (args.out / f"{name}.md").write_text(generate())
    except DocsError as exc:
        print(f"docs: {exc}", file=sys.stderr)
        return 1
    print(
        f"wrote {', '.join(GENERATORS)} into {args.out.relative_to(REPO) if args.out.is_relative_to(REPO) else args.out}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
