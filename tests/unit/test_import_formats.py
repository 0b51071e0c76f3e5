"""The MovieLens importer without Spark: each format's parser, bad lines, landing days, idempotence."""

from __future__ import annotations

import gzip
import hashlib
import json
from datetime import UTC, date, datetime
from pathlib import Path

import numpy as np
import pytest

from jobs.importer import job, landing
from jobs.importer.formats import SourceError, detect_format, read_records
from jobs.ingest import rows as kernels

pytestmark = pytest.mark.unit

DAY1 = date(2000, 1, 1)
T1 = int(datetime(2000, 1, 1, 10, tzinfo=UTC).timestamp())  # 946720800
T3 = int(datetime(2000, 1, 3, 23, 59, 59, tzinfo=UTC).timestamp())
ROWS = [(1, 10, 4, T1), (2, 10, 5, T1 + 60), (1, 11, 3, T3)]
SOURCES = {  # one tiny file per format, the same three ratings
    "u.data": "".join(f"{u}\t{i}\t{r}\t{t}\n" for u, i, r, t in ROWS),
    "ml.inter": "user_id:token\titem_id:token\trating:float\ttimestamp:float\n"
    + "".join(f"{u}\t{i}\t{r}.0\t{t}.0\n" for u, i, r, t in ROWS),
    "ratings.dat": "".join(f"{u}::{i}::{r}::{t}\n" for u, i, r, t in ROWS),
    "ratings.csv": "userId,movieId,rating,timestamp\n" + "".join(f"{u},{i},{r}.0,{t}\n" for u, i, r, t in ROWS),
}


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def records(path: Path, fmt: str = "auto", chunk_bytes: int = 1 << 20) -> np.ndarray:
    return np.concatenate(list(read_records(path, fmt, chunk_bytes=chunk_bytes)))


def tree(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in root.rglob("*") if p.is_file()
    }


@pytest.mark.parametrize("name", sorted(SOURCES))
def test_every_format_parses_to_the_same_ratings(tmp_path, name):
    rec = records(write(tmp_path, name, SOURCES[name]))
    assert [(int(r["user"]), int(r["item"]), int(r["half_stars"]) // 2, int(r["ts"])) for r in rec] == ROWS


@pytest.mark.parametrize(
    ("name", "line", "fmt"),
    [
        ("u.data", b"1\t2\t3\t4\n", "udata"),
        ("ratings.dat", b"1::2::3::4\n", "dat"),
        ("x.inter", b"user_id:token\titem_id:token\n", "inter"),
        ("ratings.csv", b"userId,movieId\n", "csv"),
        ("export", b"user_id:token\titem_id:token\n", "inter"),
        ("export", b"userId,movieId,rating,timestamp\n", "csv"),
        ("export", b"1::2::3::4\n", "dat"),
        ("export", b"1\t2\t3\t4\n", "udata"),
    ],
)
def test_the_format_is_told_by_name_then_by_content(name, line, fmt):
    assert detect_format(Path(name), line) == fmt


@pytest.mark.parametrize(
    ("name", "bad", "why"),
    [
        ("u.data", "7\t8\t3\n", "expected 4 fields"),
        ("u.data", "7\tx8\t3\t5\n", "item id 'x8' is not a non-negative integer"),
        ("ratings.dat", "7::8::6::5\n", "rating '6' is not 0.5-5 in half stars"),
        ("ratings.csv", "7,8,3.25,5\n", "rating '3.25' is not 0.5-5 in half stars"),
        ("ml.inter", "7\t8\t3\tyesterday\n", "timestamp 'yesterday' is not a unix time"),
        ("ratings.csv", "7,8,,5\n", "rating '' is not"),
    ],
)
def test_a_bad_line_is_named_by_file_and_line_even_past_the_first_block(tmp_path, name, bad, why):
    lines = SOURCES[name].splitlines(keepends=True)
    path = write(tmp_path, name, "".join([*lines, *lines[-3:] * 20, bad, *lines[-2:]]))
    line_no = len(lines) + 60 + 1
    with pytest.raises(SourceError, match=rf"{name}:{line_no}: {why}"):
        records(path, chunk_bytes=64)  # many blocks: the line number is counted across them
    with pytest.raises(SourceError, match=rf"{name}:{line_no}: "):
        records(path)


def test_a_header_without_the_rating_columns_is_refused(tmp_path):
    with pytest.raises(SourceError, match=r"ratings.csv:1: header .* lacks rating, timestamp"):
        records(write(tmp_path, "ratings.csv", "userId,movieId\n1,2\n"))


def test_landing_days_hold_every_rating_on_its_utc_day_and_quiet_days_are_published_empty(tmp_path):
    src = write(tmp_path, "ratings.csv", SOURCES["ratings.csv"].replace("3.0", "3.5").replace("4.0", "0.5"))
    out = landing.import_ratings(src, str(tmp_path / "landing"))
    assert (out["first_day"], out["last_day"], out["days"], out["rows"]) == ("2000-01-01", "2000-01-03", 3, 3)
    assert out["rows_per_day"] == {"2000-01-01": 2, "2000-01-02": 0, "2000-01-03": 1}
    assert out["empty_days"] == ["2000-01-02"] and out["rounded_ratings"] == 2
    day1 = tmp_path / "landing" / "dt=2000-01-01"
    lines = [json.loads(x) for x in gzip.decompress((day1 / landing.FILE_NAME).read_bytes()).splitlines()]
    assert lines[0] == {
        "event_id": f"ml-1-10-{T1}",
        "user_id": 1,
        "item_id": 10,
        "event_type": "rating",
        "ts": "2000-01-01T10:00:00Z",
        "rating": 1,
        "source_rating": 0.5,
    }
    assert "source_rating" not in lines[1] and lines[1]["rating"] == 5
    empty = tmp_path / "landing" / "dt=2000-01-02"
    assert gzip.decompress((empty / landing.FILE_NAME).read_bytes()) == b"" and (empty / "_SUCCESS").is_file()
    assert json.loads((day1 / "_SUCCESS").read_text())["rows"] == 2
    imported = json.loads(Path(out["manifest_uri"]).read_text())
    assert imported["source_sha256"] == hashlib.sha256(src.read_bytes()).hexdigest()


def test_the_lines_pass_the_ingest_rules_with_null_context_columns(tmp_path):
    src = write(tmp_path, "ratings.csv", SOURCES["ratings.csv"].replace("3.0", "3.5"))
    landing.import_ratings(src, str(tmp_path / "landing"))
    for day, n in ((DAY1, 2), (date(2000, 1, 3), 1)):
        data = gzip.decompress((tmp_path / "landing" / f"dt={day}" / landing.FILE_NAME).read_bytes())
        _, text, typed, raw_line = kernels.read_split(b"", data, "jsonl")
        assert kernels.judge(text, typed, raw_line, day).to_pylist() == [""] * n
        assert typed.column("device").null_count == typed.column("country").null_count == n
        assert typed.column("rating").to_pylist() == ([4, 5] if n == 2 else [4])


def test_reimport_is_byte_identical_and_leaves_unchanged_days_alone(tmp_path):
    src = write(tmp_path, "u.data", SOURCES["u.data"])
    first = landing.import_ratings(src, str(tmp_path / "a"))
    marker = tmp_path / "a" / "dt=2000-01-01" / "_SUCCESS"
    mtime = marker.stat().st_mtime_ns
    again = landing.import_ratings(src, str(tmp_path / "a"))
    assert first["days_written"] == 3 and again["days_written"] == 0 and marker.stat().st_mtime_ns == mtime
    landing.import_ratings(src, str(tmp_path / "b"))
    assert tree(tmp_path / "a") == tree(tmp_path / "b")


def test_a_day_range_keeps_its_days_and_counts_the_rest(tmp_path):
    src = write(tmp_path, "u.data", SOURCES["u.data"])
    out = landing.import_ratings(src, str(tmp_path / "l"), first=date(2000, 1, 2), last=date(2000, 1, 4))
    assert out["rows_per_day"] == {"2000-01-02": 0, "2000-01-03": 1, "2000-01-04": 0}
    assert out["outside_range"] == 2 and out["source_rows"] == 3


def test_the_job_exits_bad_input_naming_the_line_and_writes_nothing(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("RECSYS__STORAGE__ROOT", str(tmp_path / "data"))
    src = write(tmp_path, "ratings.dat", SOURCES["ratings.dat"] + "9::9::9\n")
    result = tmp_path / "result.json"
    code = job.main(["movielens", "--source", str(src), "--result-file", str(result)])
    assert code == 3 and "ratings.dat:4: expected 4 fields" in capsys.readouterr().err
    assert json.loads(result.read_text())["exit_code"] == 3 and not (tmp_path / "data").exists()
    assert job.main(["movielens", "--source", str(tmp_path / "nope.csv")]) == 2
    good = write(tmp_path, "u.data", SOURCES["u.data"])
    assert job.main(["movielens", "--source", str(good), "--result-file", str(result)]) == 0
    assert json.loads(result.read_text())["rows"] == 3
    assert (tmp_path / "data" / "landing" / "events" / "dt=2000-01-03" / "_SUCCESS").is_file()
