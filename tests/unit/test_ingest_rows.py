"""The ingest job's row logic without Spark: byte ranges, typing, rules, buckets, dedup."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import date

import pyarrow as pa
import pytest

from jobs.core import schema
from jobs.ingest import buckets as bk
from jobs.ingest import job
from jobs.ingest import rows as kernels

pytestmark = pytest.mark.unit

DAY = date(2026, 3, 1)
GOOD = {
    "event_id": "e1",
    "user_id": 7,
    "item_id": 3,
    "event_type": "play",
    "ts": "2026-03-01T10:00:00.000Z",
    "watch_seconds": 30.5,
    "rating": None,
    "device": "tv",
    "country": "US",
}


def lines(*rows: dict | str) -> bytes:
    return b"".join((r if isinstance(r, str) else json.dumps(r)).encode() + b"\n" for r in rows)


def reasons_of(data: bytes, fmt: str = "jsonl", header: bytes = b"") -> list[str]:
    _, text, typed, raw_line = kernels.read_split(header, data, fmt)
    return kernels.judge(text, typed, raw_line, DAY).to_pylist()


@pytest.mark.parametrize("fmt", ["jsonl", "csv"])
@pytest.mark.parametrize("split_bytes", [1, 7, 50, 61, 62, 63, 10_000])
def test_byte_ranges_hold_every_line_exactly_once(tmp_path, fmt, split_bytes):
    header = b"event_id,user_id\n" if fmt == "csv" else b""
    body = [f"row-{i:03d}-{'x' * (i % 17)}".encode() for i in range(40)]
    path = tmp_path / f"day.{fmt}"
    path.write_bytes(header + b"\n".join(body) + b"\n")
    got = []
    for split in job.plan_splits([str(path)], split_bytes):
        head, data = kernels.read_range(*split, fmt)
        assert head == header
        got += [line for line in data.split(b"\n") if line]
    assert got == body


@pytest.mark.parametrize("fmt", ["jsonl", "csv"])
def test_a_gzip_file_is_one_range_read_whole_and_its_rows_estimated_uncompressed(tmp_path, fmt):
    import gzip

    header = b"event_id,user_id\n" if fmt == "csv" else b""
    body = b"".join(f"row-{i:05d},{i}\n".encode() for i in range(5000))
    plain, packed = tmp_path / f"day.{fmt}", tmp_path / f"day.{fmt}.gz"
    plain.write_bytes(header + body)
    packed.write_bytes(gzip.compress(header + body))
    assert packed.stat().st_size < plain.stat().st_size // 3
    splits = job.plan_splits([str(packed)], 100)  # no byte ranges inside a compressed stream
    assert splits == [(str(packed), 0, packed.stat().st_size)]
    assert kernels.read_range(*splits[0], fmt) == (header, body)
    assert job.uncompressed_size(str(packed)) == plain.stat().st_size
    assert job.estimate_rows([str(packed)]) == job.estimate_rows([str(plain)])
    with pytest.raises(ValueError, match="read whole"):
        kernels.read_range(str(packed), 10, 20, fmt)


def test_a_file_without_a_final_newline_keeps_its_last_line(tmp_path):
    path = tmp_path / "day.jsonl"
    path.write_bytes(b'{"a":1}\n{"a":2}')
    data = b"".join(kernels.read_range(*s, "jsonl")[1] for s in job.plan_splits([str(path)], 5))
    assert data.split(b"\n") == [b'{"a":1}', b'{"a":2}']


def test_clean_rows_are_typed_and_normalised():
    row = {**GOOD, "event_type": " PLAY ", "device": "TV", "country": "us"}
    raw, text, typed, raw_line = kernels.read_split(b"", lines(row), "jsonl")
    got = typed.to_pylist()[0]
    assert (got["event_type"], got["device"], got["country"]) == ("play", "tv", "US")
    assert got["user_id"] == 7 and got["watch_seconds"] == 30.5
    assert got["ts"].isoformat() == "2026-03-01T10:00:00+00:00"
    assert raw.column("event_type").to_pylist() == [" PLAY "]  # the quarantine keeps the raw text
    assert kernels.judge(text, typed, raw_line, DAY).to_pylist() == [""]


def test_the_line_by_line_path_types_as_the_fast_path():
    rows = [GOOD, {**GOOD, "event_id": "e2", "rating": 4, "event_type": "rating", "watch_seconds": None}]
    fast = kernels.read_split(b"", lines(*rows), "jsonl")
    slow = kernels.read_split(b"", lines(*rows, "not json"), "jsonl")  # one bad line: the whole range as text
    assert slow[2].slice(0, 2).to_pylist() == fast[2].to_pylist()
    assert slow[3].to_pylist() == [None, None, "not json"]


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"event_id": None}, "event_id: missing"),
        ({"event_id": "   "}, "event_id: missing"),
        ({"user_id": "user-7"}, "user_id: not an integer"),
        ({"user_id": -1}, "user_id: negative"),
        ({"item_id": 1.5}, "item_id: not an integer"),
        ({"event_type": "purchase"}, "event_type: unknown value"),
        ({"event_type": None}, "event_type: missing"),
        ({"ts": "yesterday"}, "ts: not a timestamp"),
        ({"ts": "2026-03-02T00:00:00Z"}, "ts: outside the logical day"),
        ({"ts": "2026-03-01T23:59:59+00:00"}, ""),
        ({"ts": "2026-03-01 12:00:00"}, ""),
        ({"watch_seconds": "n/a"}, "watch_seconds: not a number"),
        ({"watch_seconds": 90_000}, "watch_seconds: out of range"),
        ({"watch_seconds": None}, "watch_seconds: missing for play"),
        ({"rating": 4.5}, "rating: not an integer 1-5"),
        ({"event_type": "rating", "watch_seconds": None}, "rating: missing for rating"),
        ({"device": "car"}, "device: unknown value"),
        ({"country": "USA"}, "country: not an ISO-3166 alpha-2 code"),
        ({"country": None, "device": None}, ""),
        ({"country": "   ", "device": ""}, ""),
        ({"user_id": None, "item_id": -2, "ts": None}, "user_id: missing; item_id: negative; ts: missing"),
    ],
)
def test_each_rule_names_the_field(change, expected):
    assert reasons_of(lines({**GOOD, **change})) == [expected]


def test_a_ratings_log_without_context_columns_is_valid_with_null_device_and_country():
    row = {k: v for k, v in GOOD.items() if k not in ("device", "country", "watch_seconds")}
    row |= {"event_type": "rating", "rating": 4}
    wrong = {**row, "event_id": "e2", "device": "car", "country": "usa"}
    _, text, typed, raw_line = kernels.read_split(b"", lines(row, wrong), "jsonl")
    assert kernels.judge(text, typed, raw_line, DAY).to_pylist() == [
        "",
        "device: unknown value; country: not an ISO-3166 alpha-2 code",
    ]
    assert typed.column("device").to_pylist()[0] is None and typed.column("country").to_pylist()[0] is None
    header = b"event_id,user_id,item_id,event_type,ts,rating\n"
    assert reasons_of(b"e1,7,3,rating,2026-03-01T10:00:00Z,5\n", "csv", header) == [""]


def test_malformed_lines_are_kept_whole_and_other_lines_still_judged():
    data = lines(GOOD, '{"event_id": "e9"\x00garbage{', "[1, 2]", {**GOOD, "device": "car"})
    _, text, typed, raw_line = kernels.read_split(b"", data, "jsonl")
    assert kernels.judge(text, typed, raw_line, DAY).to_pylist() == [
        "",
        "malformed line",
        "malformed line",
        "device: unknown value",
    ]
    assert raw_line.to_pylist()[1:3] == ['{"event_id": "e9"\x00garbage{', "[1, 2]"]


def test_csv_unterminated_quote_spoils_only_its_line():
    header = b"event_id,user_id,item_id,event_type,ts,watch_seconds,rating,device,country\n"
    good = b"e1,7,3,play,2026-03-01T10:00:00Z,30,,tv,US\n"
    data = good + b'e2,7,"unterminated\n' + good.replace(b"e1", b"e3")
    raw, text, typed, raw_line = kernels.read_split(header, data, "csv")
    verdicts = dict(zip(raw_line.to_pylist(), kernels.judge(text, typed, raw_line, DAY).to_pylist(), strict=True))
    assert verdicts == {None: "", 'e2,7,"unterminated': "malformed line"}
    assert sorted(filter(None, raw.column("event_id").to_pylist())) == ["e1", "e3"]
    assert raw.column("rating").to_pylist() == [None, None, None]  # an empty field is missing


def test_buckets_are_stable_across_processes_and_keep_copies_together():
    ids = pa.array([f"id-{i}" for i in range(10_000)] + ["id-5", "", "ü-ñ"])
    buckets = bk.bucket_of(ids, 5)
    assert set(buckets.tolist()) == {0, 1, 2, 3, 4}
    assert buckets[5] == buckets[10_000]
    assert max(sum(buckets == b) for b in range(5)) < 1.2 * len(ids) / 5
    code = "from jobs.ingest import buckets; import pyarrow as pa; print(buckets.bucket_of(pa.array(['id-1', 'ü-ñ']), 7).tolist())"
    other = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert json.loads(other.stdout) == bk.bucket_of(pa.array(["id-1", "ü-ñ"]), 7).tolist()
    assert bk.bucket_of(pa.array(["id-1"]), 1).tolist() == [0]


def test_dedup_keeps_the_smallest_copy_and_counts_conflicts():
    rows = [
        {**GOOD, "event_id": "a", "ts": "2026-03-01T11:00:00Z"},
        {**GOOD, "event_id": "a", "ts": "2026-03-01T10:00:00Z"},
        {**GOOD, "event_id": "b"},
        {**GOOD, "event_id": "b"},
        {**GOOD, "event_id": "c"},
    ]
    _, _, typed, _ = kernels.read_split(b"", lines(*rows), "jsonl")
    table = bk._sorted(typed.cast(schema.curated_schema()), ("event_id", *bk.DEDUP_ORDER))
    kept, removed, conflicts = bk._dedup_sorted(table)
    assert kept.column("event_id").to_pylist() == ["a", "b", "c"]
    assert kept.column("ts").to_pylist()[0].hour == 10
    assert (removed, conflicts) == (2, 1)


@pytest.mark.parametrize(
    ("user_id", "watch", "expected"),
    [
        ("+5", "+2.5", ""),
        ("007", "1e3", ""),
        ("5.0", "30", "user_id: not an integer"),
        ("99999999999999999999", "30", "user_id: not an integer"),
        ("5", "Infinity", "watch_seconds: out of range"),
        ("5", "NaN", "watch_seconds: out of range"),
        ("5", "1.5.5", "watch_seconds: not a number"),
    ],
)
def test_text_numbers_are_typed_like_sql_try_cast(user_id, watch, expected):
    header = b"event_id,user_id,item_id,event_type,ts,watch_seconds,rating,device,country\n"
    data = f"e1,{user_id},3,play,2026-03-01T10:00:00Z,{watch},,tv,US\n".encode()
    assert reasons_of(data, "csv", header) == [expected]


def test_stage1_tasks_are_one_wave_over_the_slots_within_bounds():
    """Few, large byte ranges: each Python task on the Connect server starts its own worker."""
    mib = 2**20
    assert job.split_bytes_for(10 * mib, 2) == job.SPLIT_BYTES  # small days: the floor
    assert job.split_bytes_for(350 * mib, 2) == 175 * mib  # one range per task slot
    assert job.split_bytes_for(1746 * mib, 2) == job.MAX_SPLIT_BYTES  # a 10M-event day: capped
    assert job.split_bytes_for(1746 * mib, 0) == job.MAX_SPLIT_BYTES


def test_object_store_reads_group_small_files_into_one_task_each_up_to_the_target():
    """``jobs.core.spark.file_groups``: in order, at most ``target`` bytes a task, a big file alone."""
    from jobs.core.spark import file_groups

    files = ["a", "b", "c", "d", "e"]
    assert file_groups(files, [10, 10, 10, 10, 10], target=100) == [files]  # a demo's days: one task
    assert file_groups(files, [40, 40, 40, 150, 10], target=100) == [["a", "b"], ["c"], ["d"], ["e"]]
    assert file_groups([], [], target=100) == []
    with pytest.raises(ValueError):
        file_groups(files, [1, 2], target=100)  # a size per file


def test_ranges_make_one_wave_of_tasks_balanced_by_bytes_and_files_whole_waves():
    mib = 2**20
    ten = [(f"f{k}.jsonl", 0, 175 * mib) for k in range(10)]  # a 10M-event day: ten 1M-row files
    tasks = job.assign_tasks(ten, 2)
    assert [len(t) for t in tasks] == [5, 5] and sorted(s for t in tasks for s in t) == ten
    assert all(t == sorted(t) for t in tasks)  # each task reads its ranges in file order
    uneven = [("a", 0, 300), ("b", 0, 100), ("b", 100, 200), ("c", 0, 100)]
    assert job.assign_tasks(uneven, 2) == [[("a", 0, 300)], [("b", 0, 100), ("b", 100, 200), ("c", 0, 100)]]
    assert job.assign_tasks(uneven, 8) == [[s] for s in [uneven[0], uneven[1], uneven[2], uneven[3]]]
    assert job.assign_tasks(uneven[:1], 0) == [uneven[:1]]
    assert job.output_files(3_000, 2) == 1  # a small day: one file, whatever the slots
    assert job.output_files(10_000_000, 2) == 6  # 5 files of 2M → 6 of 1.67M: three a slot
    assert job.output_files(10_000_000, 0) == 5
    assert job.output_files(4_000_000, 2) == 2
