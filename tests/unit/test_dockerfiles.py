"""Static checks of the two images: ``Dockerfile`` (Airflow) and ``Dockerfile.train`` (training pod).

No Docker engine is needed: a small Dockerfile parser (line continuations, comments inside
continued instructions, the ``escape`` directive, exec/JSON form) reads both files, and the checks
compare them with the repository: the pins in requirements.txt, the files COPY names, the
.dockerignore, the job modules and the pipeline config.
"""

from __future__ import annotations

import json
import re
import shlex
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

import pytest
import yaml
from packaging.requirements import InvalidRequirement, Requirement

pytestmark = pytest.mark.unit

REPO = Path(__file__).resolve().parents[2]
AIRFLOW_DOCKERFILE = REPO / "Dockerfile"
TRAIN_DOCKERFILE = REPO / "Dockerfile.train"
DOCKERIGNORE = REPO / ".dockerignore"
REQUIREMENTS = REPO / "requirements.txt"
PIPELINE_CONFIG = REPO / "include" / "config" / "pipeline.yaml"

# What the Airflow image must leave out, and what it must keep.
AIRFLOW_IMAGE_DROPS = {
    "torch",
    "pytest",
    "pytest-timeout",
    "pytest-xdist",
    "execnet",
    "ruff",
    "mypy",
    "playwright",
    "implicit",
    "kubernetes-validate",
}
AIRFLOW_IMAGE_KEEPS = {
    "apache-airflow",
    "apache-airflow-providers-cncf-kubernetes",
    "pyspark",
    "great-expectations",
    "mlflow",
    "pydantic",
    "pyyaml",
}
# What `python -m jobs.train` needs besides torch (mlflow or mlflow-skinny for tracking).
TRAIN_IMAGE_NEEDS = {"numpy", "pandas", "pyarrow", "pydantic", "pyyaml", "boto3"}


# ---------------------------------------------------------------------------------------------
# A small Dockerfile parser
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Instruction:
    keyword: str  # upper case: FROM, RUN, COPY, ...
    value: str  # the arguments, continuation lines joined with single spaces
    line: int  # 1-based line of the keyword


_DIRECTIVE = re.compile(r"^#\s*([A-Za-z]+)\s*=\s*(\S+)\s*$")


def parse_dockerfile(text: str) -> list[Instruction]:
    """Instructions of a Dockerfile, in order.

    Handles parser directives (only ``escape`` matters here), comment and blank lines (also
    inside a continued instruction, as BuildKit does) and line continuations. Heredocs are not
    supported and rejected, so a check never silently reads half an instruction.
    """
    lines = text.splitlines()
    escape = "\\"
    index = 0
    # Parser directives: leading `# key=value` lines, before any comment, blank line or instruction.
    while index < len(lines):
        match = _DIRECTIVE.match(lines[index])
        if not match:
            break
        if match.group(1).lower() == "escape":
            escape = match.group(2)
        index += 1

    instructions: list[Instruction] = []
    parts: list[str] = []
    start = 0
    for number, raw in enumerate(lines[index:], start=index + 1):
        stripped = raw.strip()
        if not stripped or stripped.startswith("#"):
            continue  # blank/comment lines never end an instruction
        if not parts:
            start = number
        continued = stripped.endswith(escape)
        parts.append(stripped[: -len(escape)].rstrip() if continued else stripped)
        if continued:
            continue
        joined = " ".join(part for part in parts if part)
        parts = []
        keyword, _, value = joined.partition(" ")
        if re.search(r"<<-?['\"]?[A-Za-z_]", value) and keyword.upper() in {"RUN", "COPY", "ADD"}:
            raise ValueError(f"line {start}: heredocs are not supported by this parser")
        instructions.append(Instruction(keyword.upper(), value.strip(), start))
    if parts:
        raise ValueError(f"line {start}: the last instruction ends with a line continuation")
    return instructions


def final_stage(instructions: list[Instruction]) -> list[Instruction]:
    """The instructions of the last build stage, from its FROM on."""
    starts = [i for i, ins in enumerate(instructions) if ins.keyword == "FROM"]
    assert starts, "no FROM instruction"
    return instructions[starts[-1] :]


def exec_form(ins: Instruction) -> list[str]:
    """The argv of a JSON/exec-form instruction (CMD, ENTRYPOINT, COPY [...])."""
    assert ins.value.startswith("["), f"line {ins.line}: {ins.keyword} should use the exec (JSON) form"
    argv = json.loads(ins.value)
    assert isinstance(argv, list), f"line {ins.line}: {ins.keyword} is not a JSON list"
    assert all(isinstance(arg, str) for arg in argv), f"line {ins.line}: {ins.keyword} has a non-string item"
    return argv


def expand(value: str, variables: dict[str, str]) -> str:
    """Substitute ``$VAR`` / ``${VAR}`` from known ARG/ENV values; unknown ones stay as written."""

    def lookup(match: re.Match[str]) -> str:
        name = match.group(1) or match.group(2)
        return variables.get(name, match.group(0))

    return re.sub(r"\$\{(\w+)\}|\$(\w+)", lookup, value)


def _assignments(ins: Instruction, variables: dict[str, str]) -> dict[str, str]:
    """``KEY=VALUE ...`` pairs of an ENV/ARG instruction (or legacy ``ENV KEY VALUE``)."""
    tokens = shlex.split(ins.value)
    if ins.keyword == "ENV" and tokens and "=" not in tokens[0]:
        return {tokens[0]: expand(" ".join(tokens[1:]), variables)}
    result: dict[str, str] = {}
    for token in tokens:
        name, sep, default = token.partition("=")
        if ins.keyword == "ARG" and not sep:
            continue  # ARG without a default: no value known statically
        assert sep, f"line {ins.line}: cannot parse {ins.keyword} {token!r}"
        result[name] = expand(default, {**variables, **result})
    return result


def variables_of(instructions: list[Instruction]) -> dict[str, str]:
    """ARG defaults and ENV values as they stand at the end of the instructions given."""
    variables: dict[str, str] = {}
    for ins in instructions:
        if ins.keyword in {"ARG", "ENV"}:
            variables.update(_assignments(ins, variables))
    return variables


def env_of(instructions: list[Instruction]) -> dict[str, str]:
    """ENV values only (what the running container sees, as far as this file sets them)."""
    variables: dict[str, str] = {}
    env: dict[str, str] = {}
    for ins in instructions:
        if ins.keyword in {"ARG", "ENV"}:
            assigned = _assignments(ins, variables)
            variables.update(assigned)
            if ins.keyword == "ENV":
                env.update(assigned)
    return env


@dataclass(frozen=True)
class Copy:
    instruction: Instruction
    sources: list[str]
    dest: str
    from_stage: str | None


def copies(instructions: list[Instruction]) -> list[Copy]:
    found = []
    for ins in instructions:
        if ins.keyword not in {"COPY", "ADD"}:
            continue
        tokens = shlex.split(ins.value)
        flags = [t for t in tokens if t.startswith("--")]
        rest = [t for t in tokens if not t.startswith("--")]
        if rest and rest[0].startswith("["):
            rest = json.loads(" ".join(rest))
        assert len(rest) >= 2, f"line {ins.line}: {ins.keyword} needs a source and a destination"
        from_stage = next((f.split("=", 1)[1] for f in flags if f.startswith("--from=")), None)
        found.append(Copy(ins, rest[:-1], rest[-1], from_stage))
    return found


def copy_destination(instructions: list[Instruction], source: str) -> str:
    """Where the (single) COPY of a repository folder such as ``jobs/`` lands, without a trailing slash."""
    wanted = source.strip("/")
    dests = [
        c.dest for c in copies(instructions) if c.from_stage is None and wanted in {s.strip("/") for s in c.sources}
    ]
    assert len(dests) == 1, f"expected exactly one COPY of {source}, found {dests}"
    return dests[0].rstrip("/")


def users_at(instructions: list[Instruction]) -> list[tuple[Instruction, str]]:
    """Each instruction with the USER in force when it runs ("" = the base image's user)."""
    user = ""
    result = []
    for ins in instructions:
        if ins.keyword == "FROM":
            user = ""
        if ins.keyword == "USER":
            user = ins.value.strip()
        result.append((ins, user))
    return result


# ---------------------------------------------------------------------------------------------
# requirements.txt and .dockerignore
# ---------------------------------------------------------------------------------------------


def normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def requirement_lines() -> list[str]:
    return [
        line.strip()
        for line in REQUIREMENTS.read_text().splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    ]


def pins() -> dict[str, str]:
    """Normalized name -> exact version, from the fully pinned requirements.txt."""
    result = {}
    for line in requirement_lines():
        match = re.fullmatch(r"([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;]+)", line)
        assert match, f"requirements.txt line is not an exact pin: {line!r}"
        result[normalize(match.group(1))] = match.group(2)
    return result


def dockerignore_patterns(text: str) -> list[tuple[bool, re.Pattern[str]]]:
    """(negated, regex) per .dockerignore line, in order (the last match wins)."""
    patterns = []
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        negated = line.startswith("!")
        glob = line[1:].strip() if negated else line
        glob = re.sub(r"/+", "/", glob).strip("/")
        regex = ""
        i = 0
        while i < len(glob):
            if glob.startswith("**/", i):
                regex += "(?:.*/)?"
                i += 3
            elif glob.startswith("**", i):
                regex += ".*"
                i += 2
            elif glob[i] == "*":
                regex += "[^/]*"
                i += 1
            elif glob[i] == "?":
                regex += "[^/]"
                i += 1
            else:
                regex += re.escape(glob[i])
                i += 1
        patterns.append((negated, re.compile(regex)))
    return patterns


def is_ignored(path: str, patterns: list[tuple[bool, re.Pattern[str]]]) -> bool:
    """Whether a context path is left out: a pattern excludes a folder and everything inside it."""
    parts = path.strip("/").split("/")
    ignored = False
    for negated, regex in patterns:
        if any(regex.fullmatch("/".join(parts[:n])) for n in range(1, len(parts) + 1)):
            ignored = not negated
    return ignored


# ---------------------------------------------------------------------------------------------
# Fixtures
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def airflow() -> list[Instruction]:
    return parse_dockerfile(AIRFLOW_DOCKERFILE.read_text())


@pytest.fixture(scope="module")
def train() -> list[Instruction]:
    return parse_dockerfile(TRAIN_DOCKERFILE.read_text())


@pytest.fixture(scope="module")
def lock() -> dict[str, str]:
    return pins()


def train_argv(train: list[Instruction]) -> list[str]:
    stage = final_stage(train)
    entrypoint = [ins for ins in stage if ins.keyword == "ENTRYPOINT"]
    cmd = [ins for ins in stage if ins.keyword == "CMD"]
    argv = (exec_form(entrypoint[-1]) if entrypoint else []) + (exec_form(cmd[-1]) if cmd else [])
    assert argv, "Dockerfile.train sets neither ENTRYPOINT nor CMD"
    return argv


def train_module(train: list[Instruction]) -> str:
    argv = train_argv(train)
    for flag in ("-m", "--module"):
        if flag in argv[:-1]:
            return argv[argv.index(flag) + 1]
    raise AssertionError(f"the training image's command runs no module (`-m`): {argv}")


# ---------------------------------------------------------------------------------------------
# The parser itself
# ---------------------------------------------------------------------------------------------


def test_parser_handles_continuations_comments_and_directives():
    text = "\n".join(
        [
            "# syntax=docker/dockerfile:1",
            "# escape=\\",
            "",
            "# a comment",
            "FROM  base:1 AS build",
            "RUN set -eux; \\",
            "    # a comment inside a continued instruction",
            "    echo one; \\",
            "",
            "    echo two",
            "ENV A=1 \\",
            '    B="two words" C=${A}/x',
            'CMD ["python", "-m", "jobs.x"]',
            "copy --chown=1:1 a/ b.txt /dst/",
        ]
    )
    instructions = parse_dockerfile(text)
    assert [i.keyword for i in instructions] == ["FROM", "RUN", "ENV", "CMD", "COPY"]
    assert instructions[0].value == "base:1 AS build"
    assert instructions[1].value == "set -eux; echo one; echo two"
    assert instructions[1].line == 6
    assert env_of(instructions) == {"A": "1", "B": "two words", "C": "1/x"}
    assert exec_form(instructions[3]) == ["python", "-m", "jobs.x"]
    (copy,) = copies(instructions)
    assert (copy.sources, copy.dest) == (["a/", "b.txt"], "/dst/")
    with pytest.raises(ValueError, match="continuation"):
        parse_dockerfile("FROM x\nRUN echo \\\n")
    backtick = parse_dockerfile("# escape=`\nFROM x\nRUN a `\n  b")
    assert backtick[1].value == "a b"


def test_dockerignore_matcher():
    patterns = dockerignore_patterns(".venv\n**/__pycache__\n*.md\n!README.md\n/docs/\n")
    assert is_ignored(".venv", patterns)
    assert is_ignored(".venv/bin/python", patterns)
    assert is_ignored("jobs/__pycache__/x.pyc", patterns)
    assert is_ignored("__pycache__/x.pyc", patterns)
    assert is_ignored("CHANGES.md", patterns)
    assert not is_ignored("README.md", patterns)
    assert not is_ignored("jobs/README.md", patterns)  # `*` does not cross folders
    assert is_ignored("docs/a/b.txt", patterns)
    assert not is_ignored("jobs/train.py", patterns)


# ---------------------------------------------------------------------------------------------
# Both images
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dockerfile", [AIRFLOW_DOCKERFILE, TRAIN_DOCKERFILE], ids=lambda p: p.name)
def test_copy_sources_exist_and_are_in_the_build_context(dockerfile: Path):
    patterns = dockerignore_patterns(DOCKERIGNORE.read_text())
    found = [c for c in copies(parse_dockerfile(dockerfile.read_text())) if c.from_stage is None]
    assert found, f"{dockerfile.name} copies nothing from the repository"
    for copy in found:
        for source in copy.sources:
            where = f"{dockerfile.name}:{copy.instruction.line}"
            assert "://" not in source, (
                f"{where}: {copy.instruction.keyword} of a URL ({source}); pin files in the repo instead"
            )
            assert not Path(source).is_absolute(), f"{where}: {source} leaves the build context"
            assert ".." not in Path(source).parts, f"{where}: {source} leaves the build context"
            matches = sorted(REPO.glob(source.rstrip("/"))) if any(ch in source for ch in "*?[") else [REPO / source]
            assert matches, f"{where}: no file matches {source}"
            for match in matches:
                assert match.exists(), f"{where}: {source} does not exist in the repository"
                rel = match.relative_to(REPO).as_posix()
                assert not is_ignored(rel, patterns), f"{where}: {rel} is excluded by .dockerignore"
                files = [p for p in match.rglob("*") if p.is_file()] if match.is_dir() else [match]
                for file in files:
                    frel = file.relative_to(REPO).as_posix()
                    if "__pycache__" in file.parts or file.suffix == ".pyc":
                        continue
                    assert not is_ignored(frel, patterns), (
                        f"{where}: {frel} (under {source}) is excluded by .dockerignore"
                    )


def test_dockerignore_excludes_local_state():
    patterns = dockerignore_patterns(DOCKERIGNORE.read_text())
    for path in (".venv", ".venv/bin/python", ".local", ".local/data/x.parquet", ".git", "test-artifacts/report.xml"):
        assert is_ignored(path, patterns), f".dockerignore should exclude {path}"
    for path in (
        "requirements.txt",
        "jobs/config.py",
        "include/config/pipeline.yaml",
        "dags/x.py",
        "plugins/recsys_airflow/__init__.py",
    ):
        assert not is_ignored(path, patterns), f".dockerignore must keep {path}"


def test_requirements_are_fully_pinned(lock: dict[str, str]):
    assert {"apache-airflow", "torch"} <= lock.keys()


# ---------------------------------------------------------------------------------------------
# The Airflow image
# ---------------------------------------------------------------------------------------------


def test_airflow_base_image_is_the_pinned_airflow(airflow: list[Instruction], lock: dict[str, str]):
    froms = [ins for ins in airflow if ins.keyword == "FROM"]
    assert len(froms) == 1, "the Airflow image is a single stage"
    image = froms[0].value.split()[0]
    assert image == f"apache/airflow:{lock['apache-airflow']}-python3.11"


def test_airflow_image_has_no_jvm(airflow: list[Instruction]):
    """Spark jobs are Connect clients: no Java runtime in the Airflow image, no JAVA_HOME."""
    for ins in airflow:
        assert not re.search(r"\b(openjdk|default-jre|temurin|java)\b", ins.value, re.I) or ins.keyword not in (
            "RUN",
            "ENV",
        ), f"line {ins.line}: {ins.keyword} {ins.value[:80]}"
    assert "JAVA_HOME" not in env_of(airflow)


def test_airflow_image_runs_as_airflow(airflow: list[Instruction]):
    users = users_at(airflow)
    assert users[-1][1] == "airflow", "the image must end as the airflow user"
    pip_runs = [(ins, user) for ins, user in users if ins.keyword == "RUN" and "pip install" in ins.value]
    assert pip_runs, "the Airflow image installs no Python packages"
    for ins, user in pip_runs:
        assert user == "airflow", f"line {ins.line}: pip install must run as the airflow user"


def _airflow_requirement_filter(airflow: list[Instruction]) -> tuple[Instruction, re.Pattern[str], str]:
    """The RUN that filters requirements.txt: (instruction, the grep -v pattern, the filtered file)."""
    variables = variables_of(airflow)
    grep = re.compile(
        r"grep\s+-(?P<flags>[A-Za-z]*v[A-Za-z]*)\s+(?:\"(?P<dq>[^\"]*)\"|'(?P<sq>[^']*)'|(?P<bare>\S+))"
        r"\s+(?P<src>\S*requirements\.txt)\s*>\s*(?P<out>\S+)"
    )
    for ins in airflow:
        if ins.keyword == "RUN" and (match := grep.search(ins.value)):
            raw = match.group("dq") if match.group("dq") is not None else (match.group("sq") or match.group("bare"))
            pattern = expand(raw, variables) if match.group("sq") is None else raw
            assert "$" not in pattern, f"line {ins.line}: cannot resolve the grep pattern {raw!r}"
            flags = re.IGNORECASE if "i" in match.group("flags") else 0
            assert not set(match.group("flags")) & {"x", "F"}, "use a regex (grep -vE) filter"
            return ins, re.compile(pattern, flags), match.group("out").rstrip(";")
    raise AssertionError("no RUN filters requirements.txt with `grep -v ... requirements.txt > FILE`")


def test_airflow_image_leaves_out_torch_and_dev_tools(airflow: list[Instruction], lock: dict[str, str]):
    ins, pattern, filtered = _airflow_requirement_filter(airflow)
    kept = {normalize(line.split("==")[0]) for line in requirement_lines() if not pattern.search(line)}
    dropped = set(lock) - kept
    assert "torch" in dropped, "torch must not be installed in the Airflow image"
    assert dropped == AIRFLOW_IMAGE_DROPS, f"the filter drops {sorted(dropped)}, expected {sorted(AIRFLOW_IMAGE_DROPS)}"
    assert kept >= AIRFLOW_IMAGE_KEEPS, f"the filter drops needed packages: {sorted(AIRFLOW_IMAGE_KEEPS - kept)}"

    pip = [m.group(0) for m in re.finditer(r"pip\s+install\b[^;&|]*", ins.value)]
    assert pip, f"line {ins.line}: the filtering RUN does not pip install"
    for command in pip:
        assert "--no-cache-dir" in command, f"line {ins.line}: pip install without --no-cache-dir"
        targets = re.findall(r"(?:-r|--requirement)[\s=]+(\S+)", command)
        assert targets == [filtered], (
            f"line {ins.line}: pip must install only the filtered file {filtered}, not {targets}"
        )
    # No other RUN installs from the unfiltered lock.
    for other in airflow:
        if other.keyword == "RUN" and other is not ins:
            assert not re.search(r"pip\s+install\b[^;&|]*requirements\.txt", other.value), (
                f"line {other.line}: unfiltered install"
            )


def test_airflow_image_kept_packages_do_not_pull_dropped_ones(airflow: list[Instruction]):
    """pip would install torch anyway if a kept package depended on it (checked in this venv's metadata)."""
    _, pattern, _ = _airflow_requirement_filter(airflow)
    kept = {normalize(line.split("==")[0]) for line in requirement_lines() if not pattern.search(line)}
    installed = {normalize(d.metadata["Name"]): d for d in metadata.distributions() if d.metadata["Name"]}
    offenders = []
    for name in sorted(kept & installed.keys()):
        for spec in installed[name].requires or []:
            try:
                requirement = Requirement(spec)
            except InvalidRequirement:
                continue
            if requirement.marker is not None and not requirement.marker.evaluate({"extra": ""}):
                continue
            if normalize(requirement.name) in AIRFLOW_IMAGE_DROPS:
                offenders.append(f"{name} -> {spec}")
    assert not offenders, f"kept packages need dropped ones: {offenders}"


def test_airflow_image_project_layout(airflow: list[Instruction]):
    env = env_of(airflow)
    dags = copy_destination(airflow, "dags/")
    plugins = copy_destination(airflow, "plugins/")
    jobs = copy_destination(airflow, "jobs/")
    include = copy_destination(airflow, "include/")
    root = jobs.rsplit("/", 1)[0]
    assert jobs == f"{root}/jobs"
    assert include == f"{root}/include", "jobs/config.py looks for include/ next to jobs/"
    # plugins/recsys_airflow/launcher.py takes the repository root as parents[2] of itself.
    assert plugins == f"{root}/plugins", "plugins/ must sit next to jobs/ (the launcher finds the root from it)"
    assert dags == f"{root}/dags"
    pythonpath = env.get("PYTHONPATH", "").split(":")
    assert root in pythonpath, f"PYTHONPATH {pythonpath} lacks {root} (for `import jobs`)"
    assert plugins in pythonpath, f"PYTHONPATH {pythonpath} lacks {plugins} (for `import recsys_airflow`)"
    assert env.get("AIRFLOW__CORE__DAGS_FOLDER") == dags
    assert env.get("AIRFLOW__CORE__PLUGINS_FOLDER") == plugins
    assert env.get("RECSYS_PROFILE") == "cluster"


# ---------------------------------------------------------------------------------------------
# The training image
# ---------------------------------------------------------------------------------------------


def _train_pip_runs(train: list[Instruction]) -> list[Instruction]:
    runs = [ins for ins in final_stage(train) if ins.keyword == "RUN" and re.search(r"pip\s+install\b", ins.value)]
    assert runs, "Dockerfile.train installs no Python packages"
    return runs


def test_training_image_installs_the_pinned_torch(train: list[Instruction], lock: dict[str, str]):
    variables = variables_of(train)
    assert variables.get("TORCH_VERSION") == lock["torch"], (
        f"Dockerfile.train TORCH_VERSION={variables.get('TORCH_VERSION')} but requirements.txt pins torch=={lock['torch']}"
    )
    torch_installs = []
    for ins in _train_pip_runs(train):
        for command in re.findall(r"pip\s+install\b[^;&|]*", ins.value):
            specs = re.findall(r"[\"']?torch==(\S+?)[\"']?(?:\s|$)", expand(command, variables) + " ")
            if specs:
                torch_installs.append((ins, expand(command, variables), specs))
    assert len(torch_installs) == 1, f"expected one pip install of torch, found {len(torch_installs)}"
    ins, command, specs = torch_installs[0]
    assert [spec.split("+")[0] for spec in specs] == [lock["torch"]], f"line {ins.line}: installs torch {specs}"
    assert "download.pytorch.org/whl/" in command, f"line {ins.line}: install the CUDA build from the PyTorch index"
    assert re.search(r"grep\s+-\w*\s+[\"']?torch==\$\{?TORCH_VERSION", ins.value), (
        f"line {ins.line}: the build should fail when TORCH_VERSION differs from requirements.txt"
    )


def test_training_image_cuda_build_matches_base_image(train: list[Instruction]):
    base = final_stage(train)[0].value.split()[0]
    match = re.fullmatch(r"nvidia/cuda:(\d+)\.(\d+)\.\d+-[a-z-]+-ubuntu\d+\.\d+", base)
    assert match, f"the training image should build on an official nvidia/cuda image, not {base}"
    assert variables_of(train).get("TORCH_CUDA") == f"cu{match.group(1)}{match.group(2)}", (
        "torch's CUDA build != base CUDA"
    )


def test_training_image_pins_match_requirements(train: list[Instruction], lock: dict[str, str]):
    variables = variables_of(train)
    names = {normalize(name) for name in variables.get("TRAIN_PACKAGES", "").split()}
    assert names, "Dockerfile.train should list the packages it installs in ARG TRAIN_PACKAGES"
    missing = sorted(name for name in names if name not in lock)
    assert not missing, f"TRAIN_PACKAGES not pinned in requirements.txt (the build would fail): {missing}"
    assert names >= TRAIN_IMAGE_NEEDS, f"TRAIN_PACKAGES lacks {sorted(TRAIN_IMAGE_NEEDS - names)}"
    assert names & {"mlflow", "mlflow-skinny"}, "TRAIN_PACKAGES needs mlflow or mlflow-skinny"
    assert "torch" not in names, "torch is installed on its own, from the PyTorch CUDA index"

    # Any version written literally in the file must be the locked one.
    text = expand(" ".join(ins.value for ins in train), variables)
    for name, version in re.findall(r"([A-Za-z0-9][A-Za-z0-9._-]*)==([0-9][^\s\"';]*)", text):
        if normalize(name) in lock:
            assert version.split("+")[0] == lock[normalize(name)], (
                f"{name}=={version} != requirements.txt {lock[normalize(name)]}"
            )

    # Every pip install is constrained by the lock, so transitive dependencies are pinned too.
    for ins in _train_pip_runs(train):
        for command in re.findall(r"pip\s+install\b[^;&|]*", ins.value):
            assert re.search(r"(?:-c|--constraint)[\s=]+\S*requirements\.txt", command), (
                f"line {ins.line}: pip install without `-c requirements.txt`"
            )
            assert "--no-cache-dir" in command or env_of(train).get("PIP_NO_CACHE_DIR") == "1"


def test_training_image_user_is_numeric_non_root(train: list[Instruction]):
    users = [ins for ins in final_stage(train) if ins.keyword == "USER"]
    assert users, "Dockerfile.train must set USER"
    user = users[-1].value.strip()
    match = re.fullmatch(r"(\d+)(?::(\d+))?", user)
    assert match, f"USER {user!r} must be numeric (UID[:GID]) so the kubelet can verify runAsNonRoot"
    assert int(match.group(1)) != 0, "the training image must not run as root"
    if match.group(2) is not None:
        assert int(match.group(2)) != 0, "the training image's primary group should not be root"
    uid = match.group(1)
    assert any(
        ins.keyword == "RUN"
        and re.search(rf"chown\s+(?:-\w+\s+)*{uid}(?::\d+)?\s+(?:\S+\s+)*/airflow/xcom\b", ins.value)
        for ins in final_stage(train)
    ), f"/airflow/xcom must be created writable by UID {uid}"


def test_training_image_environment(train: list[Instruction]):
    env = env_of(train)
    assert env.get("PYTHONUNBUFFERED") == "1"
    assert env.get("RECSYS_PROFILE") == "cluster"
    workdirs = [ins.value for ins in final_stage(train) if ins.keyword == "WORKDIR"]
    assert workdirs, "Dockerfile.train sets no WORKDIR"
    assert workdirs[-1] == "/opt/recsys"


def test_training_image_entrypoint_runs_a_jobs_module(train: list[Instruction]):
    argv = train_argv(train)
    if Path(argv[0]).name == "tini":
        assert any(ins.keyword == "RUN" and re.search(r"\btini\b", ins.value) for ins in train), (
            "tini is never installed"
        )
    module = train_module(train)
    assert module.split(".")[0] == "jobs", f"the training entrypoint runs {module}, not a jobs.* module"

    stage = final_stage(train)
    jobs = copy_destination(stage, "jobs/")
    root = jobs.rsplit("/", 1)[0]
    assert jobs == f"{root}/jobs"
    assert copy_destination(stage, "include/config/") == f"{root}/include/config", (
        "jobs/config.py reads <root>/include/config"
    )
    env = env_of(stage)
    workdir = [ins.value for ins in stage if ins.keyword == "WORKDIR"][-1]
    assert root in env.get("PYTHONPATH", "").split(":") or root == workdir, f"{root} must be importable (`-m {module}`)"


def test_training_image_tag_in_config_names_the_pinned_torch(lock: dict[str, str]):
    config = yaml.safe_load(PIPELINE_CONFIG.read_text())
    image = config["profiles"]["cluster"]["training"]["image"]
    tag = image.rsplit(":", 1)[-1]
    assert tag.startswith(f"{lock['torch']}-"), (
        f"cluster training.image {image} should be tagged with torch {lock['torch']}"
    )


def test_training_entrypoint_module_exists(train: list[Instruction]):
    # Deliberately a failure (not a skip/xfail) until the module the image runs exists.
    module = train_module(train)
    candidates = [REPO / f"{module.replace('.', '/')}.py", REPO / module.replace(".", "/") / "__main__.py"]
    assert any(path.is_file() for path in candidates), (
        f"Dockerfile.train runs `-m {module}` but neither {candidates[0].relative_to(REPO)} nor "
        f"{candidates[1].relative_to(REPO)} exists"
    )
