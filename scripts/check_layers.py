"""The layer contract of the code base, checked on the source (every import, also inside functions).

``python scripts/check_layers.py [ROOT]`` prints each violation (file:line, the import, the rule)
and exits 1 when there is one; ``make lint`` and CI run it.

Rules (README, "Layout"):

1. nothing under ``jobs/`` imports Airflow;
2. ``jobs.core`` imports no stage (``jobs.<stage>``), only itself;
3. a stage (``jobs.<stage>``) imports ``jobs.core`` and itself, never another stage: what two
   stages share belongs in ``jobs.core``;
4. the simulator (``jobs.sim``) is imported only by tests, benchmarks and the demo;
5. DAG files (``dags/``) and the Airflow plugins (``plugins/recsys_airflow``) import
   ``jobs.core`` and never a stage; DAG files import no heavy library (the scheduler parses
   them every few seconds): torch, pyspark, mlflow, great_expectations, pandas, numpy, sklearn.
"""

from __future__ import annotations

import ast
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

HEAVY = ("torch", "pyspark", "mlflow", "great_expectations", "pandas", "numpy", "sklearn")
SIM_CLIENTS = ("tests/", "benchmarks/", "scripts/demo.py")


@dataclass(frozen=True)
class Violation:
    path: str
    line: int
    module: str
    rule: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: imports {self.module}: {self.rule}"


def _module_of(root: Path, path: Path) -> str:
    rel = path.relative_to(root).with_suffix("")
    parts = list(rel.parts)
    if parts[0] == "plugins":
        parts = parts[1:]
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def imports(path: Path, module: str) -> Iterator[tuple[int, str]]:
    """(line, absolute module name) of every import in a file, relative imports resolved."""
    tree = ast.parse(path.read_text(), filename=str(path))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                anchor = ".".join(parts[: len(parts) - node.level + 1])
                base = f"{anchor}.{base}" if base else anchor
            yield node.lineno, base
            for alias in node.names:  # ``from jobs import sim`` imports the module jobs.sim
                if base in ("jobs", "jobs.core") and alias.name != "*":
                    yield node.lineno, f"{base}.{alias.name}"


def _stage(name: str) -> str | None:
    parts = name.split(".")
    return parts[1] if len(parts) > 1 and parts[0] == "jobs" else None


def check_file(root: Path, path: Path) -> Iterator[Violation]:
    rel = path.relative_to(root).as_posix()
    module = _module_of(root, path)
    own = _stage(module) if rel.startswith("jobs/") else None
    for line, name in imports(path, module):
        top = name.split(".")[0]
        target = _stage(name)
        if rel.startswith("jobs/") and top == "airflow":
            yield Violation(rel, line, name, "nothing under jobs/ imports Airflow")
        if target == "sim" and own != "sim" and not rel.startswith(SIM_CLIENTS):
            yield Violation(rel, line, name, "the simulator is imported only by tests, benchmarks and the demo")
            continue
        if own == "core" and target not in (None, "core"):
            yield Violation(rel, line, name, "jobs.core imports no stage")
        elif own not in (None, "core") and target not in (None, "core", own):
            yield Violation(rel, line, name, f"stage jobs.{own} imports another stage (share it through jobs.core)")
        if rel.startswith(("dags/", "plugins/")) and target not in (None, "core"):
            yield Violation(rel, line, name, "DAGs and plugins import jobs.core, never a stage")
        if rel.startswith("dags/") and top in HEAVY:
            yield Violation(rel, line, name, "DAG files import no heavy library (it belongs in a task or in jobs/)")


def check(root: Path) -> list[Violation]:
    files = [
        p for sub in ("jobs", "dags", "plugins", "scripts", "benchmarks") for p in sorted((root / sub).rglob("*.py"))
    ]
    return [v for path in files for v in check_file(root, path)]


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    root = Path(args[0] if args else Path(__file__).resolve().parent.parent).resolve()
    found = check(root)
    for v in found:
        print(v)
    print(f"layer contract: {len(found)} violation(s)" if found else "layer contract: kept")
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
