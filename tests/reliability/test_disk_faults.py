"""Output zones that refuse writes: read-only folders, a file in place of a folder, a full disk.

For ingestion, the training snapshot and the validation report: the job fails with an error
that names the path, nothing partial is left (no ``.staging-*``/``.trash-*`` folder, no
temporary file), the previous version of the partition is intact (same bytes), and once the
fault is lifted the same call succeeds.

Read-only: ``chmod a-w`` — or, because these tests may run as root (CI containers), where
permission bits do not apply, the immutable attribute (``chattr +i``); the test is skipped,
naming why, where neither works. Full disk: the zone is moved onto a tmpfs with a few KiB
free (root only; skipped otherwise). The JSON writers are covered in ``test_publish_faults.py``.
"""

from __future__ import annotations

import json
import shutil
import time
from datetime import date
from pathlib import Path

import pytest

from jobs.core import storage
from tests.reliability.harness import CaseResult, Tally, full_disk, leftovers, read_only, zone_fingerprint

pytestmark = pytest.mark.reliability

NEW_DAY = date(2026, 6, 5)


def _zones(cfg) -> tuple[Path, Path]:
    return Path(cfg.storage.zone("curated")), Path(cfg.storage.zone("quarantine"))


def test_ingest_into_unwritable_zones_writes_nothing(world, spark, report):
    from jobs import sim as gen
    from jobs.core.config import get_config
    from jobs.ingest.job import ingest_day
    from tests.reliability.conftest import world_params

    started = time.monotonic()
    cfg = get_config()
    curated, quarantine = _zones(cfg)
    gen.generate(world_params(), NEW_DAY, 1, cfg.storage.zone("landing"), cfg.storage.zone("ground_truth"))
    old_day = world.days[-1]
    before = {z.name: zone_fingerprint(z) for z in (curated, quarantine)}
    inode = (quarantine / f"dt={old_day}").stat().st_ino
    tally = Tally()

    with read_only(curated) as how:
        for day in (NEW_DAY, date.fromisoformat(old_day)):
            with pytest.raises(storage.PublishError, match=f"output folder {curated} is not writable"):
                ingest_day(cfg, spark, day)
            tally.fault()
    assert not (quarantine / f"dt={NEW_DAY}").exists(), "quarantine published for a day whose curated write failed"
    assert (quarantine / f"dt={old_day}").stat().st_ino == inode  # not even rewritten
    assert {z.name: zone_fingerprint(z) for z in (curated, quarantine)} == before

    moved = quarantine.with_name("events.moved")
    quarantine.rename(moved)
    quarantine.write_text("a file where the quarantine zone should be")
    try:
        with pytest.raises(storage.PublishError, match=f"{quarantine} is a file, not a folder"):
            ingest_day(cfg, spark, NEW_DAY)
        tally.fault()
    finally:
        quarantine.unlink()
        moved.rename(quarantine)
    assert not (curated / f"dt={NEW_DAY}").exists()
    assert {z.name: zone_fingerprint(z) for z in (curated, quarantine)} == before
    assert leftovers(curated) == [] and leftovers(quarantine) == []

    result = tally.recover(ingest_day(cfg, spark, NEW_DAY))  # the fault lifted, the same call succeeds
    assert storage.read_manifest(str(curated / f"dt={NEW_DAY}"))["rows"] == result["rows"] > 3000
    report.record(
        CaseResult(
            "disk: ingest into unwritable zones",
            "test_ingest_into_unwritable_zones_writes_nothing",
            faults_injected=tally.faults,
            runs_recovered=tally.recovered,
            rows_expected=result["rows"],
            seconds=round(time.monotonic() - started, 1),
            details={"read_only_by": how, "mechanisms": ["read-only curated zone", "file in place of zone"]},
        )
    )


def test_snapshot_into_read_only_or_full_zone_keeps_the_previous_one(world, spark, report):
    from jobs.core.config import get_config
    from jobs.snapshot.job import build_snapshot

    started = time.monotonic()
    cfg = get_config()
    zone = Path(cfg.storage.zone("training"))
    day = date.fromisoformat(world.day)
    part = Path(world.snapshot_uri)
    window = int(part.name.rsplit("_w=", 1)[1])
    before = zone_fingerprint_any(part)
    tally = Tally()

    with read_only(zone) as how:
        with pytest.raises(storage.PublishError, match=f"output folder {zone} is not writable"):
            build_snapshot(cfg, spark, day, window)
        tally.fault()
    assert zone_fingerprint_any(part) == before and leftovers(zone) == []

    with full_disk(zone, free_kb=8) as small:
        with pytest.raises(Exception, match="No space left on device") as full:
            build_snapshot(cfg, spark, day, window)
        tally.fault()
        assert f"while writing partition {part}" in "\n".join(getattr(full.value, "__notes__", []))
        assert zone_fingerprint_any(small / part.name) == before
        assert leftovers(small) == [], leftovers(small)
    assert zone_fingerprint_any(part) == before

    rebuilt = tally.recover(build_snapshot(cfg, spark, day, window))
    assert rebuilt["uri"] == world.snapshot_uri and zone_fingerprint_any(part) == before
    report.record(
        CaseResult(
            "disk: snapshot read-only / full",
            "test_snapshot_into_read_only_or_full_zone_keeps_the_previous_one",
            faults_injected=tally.faults,
            runs_recovered=tally.recovered,
            seconds=round(time.monotonic() - started, 1),
            details={
                "read_only_by": how,
                "full_disk_error": f"{type(full.value).__name__}: {full.value}"[:200],
                "note": full.value.__notes__[-1][:200],
            },
        )
    )


def zone_fingerprint_any(part: Path) -> dict[str, str]:
    """Checksums of every file of a published folder (snapshots are not ``dt=`` day partitions)."""
    from tests.reliability.harness import partition_checksums

    return partition_checksums(part)


def test_validation_report_folder_read_only_keeps_the_verdict(world, report):
    from jobs.core.catalog import VALIDATION_MARKER
    from jobs.core.config import get_config
    from jobs.validate.job import validate_day

    started = time.monotonic()
    cfg = get_config()
    day = world.days[-1]
    marker = Path(cfg.storage.partition("curated", day)) / VALIDATION_MARKER
    verdict = marker.read_bytes()
    reports = Path(cfg.storage.root_path()) / "reports" / "validation" / f"dt={day}"
    assert (reports / "report.html").is_file()
    html = (reports / "report.html").read_bytes()

    tally = Tally()
    with read_only(reports) as how, pytest.raises(storage.PublishError, match=str(reports)) as failed:
        validate_day(cfg, date.fromisoformat(day))
    tally.fault()
    # The CLI (what the task runs): exit 1 (retryable), the path in the message and the result file.
    from jobs.validate.job import main

    result_file = Path(cfg.storage.root_path()).parent / "validate-result.json"
    with read_only(reports):
        assert main(["--day", day, "--result-file", str(result_file)]) == 1
    tally.fault()
    assert str(reports) in json.loads(result_file.read_text())["message"]
    assert marker.read_bytes() == verdict
    assert (reports / "report.html").read_bytes() == html
    assert sorted(p.name for p in reports.iterdir()) == ["report.html", "report.json"]
    assert [p.name for p in marker.parent.iterdir() if p.name.startswith(".")] == []

    summary = tally.recover(validate_day(cfg, date.fromisoformat(day)))
    assert summary["success"] is True
    report.record(
        CaseResult(
            "disk: validation report read-only",
            "test_validation_report_folder_read_only_keeps_the_verdict",
            faults_injected=tally.faults,
            runs_recovered=tally.recovered,
            seconds=round(time.monotonic() - started, 1),
            details={"read_only_by": how, "error": str(failed.value)[:200]},
        )
    )


def test_read_only_helper_really_refuses_writes(tmp_path):
    """The mechanism itself: a folder made read-only refuses new files, renames and deletions."""
    folder = tmp_path / "zone"
    (folder / "dt=2026-06-01").mkdir(parents=True)
    with read_only(folder):
        with pytest.raises(PermissionError):
            (folder / "new").mkdir()
        with pytest.raises(PermissionError):
            (folder / "dt=2026-06-01").rename(folder / "moved")
        with pytest.raises(PermissionError):
            shutil.rmtree(folder / "dt=2026-06-01")
    (folder / "new").mkdir()
