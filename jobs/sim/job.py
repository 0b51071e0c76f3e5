"""``python -m jobs.sim``: generate landing days of the synthetic world (see ``jobs.sim.world``)."""

from __future__ import annotations

import argparse
import time
from datetime import date
from typing import Any

from jobs.core.cli import BadArgument, run_job
from jobs.core.config import PipelineConfig
from jobs.sim.deliver import generate
from jobs.sim.world import CORRUPTION_KINDS, DRIFT_KINDS, SAMPLERS, Scenario, WorldParams


def build_parser(cfg: PipelineConfig) -> argparse.ArgumentParser:
    w = cfg.world
    ap = argparse.ArgumentParser(prog="python -m jobs.sim", description="Generate landing days of the synthetic world.")
    ap.add_argument("--start", type=date.fromisoformat, default=w.start_date, help="first day (YYYY-MM-DD)")
    ap.add_argument("--days", type=int, default=w.days)
    ap.add_argument("--users", type=int, default=w.users)
    ap.add_argument("--items", type=int, default=w.items)
    ap.add_argument("--events-per-day", type=int, default=w.events_per_day)
    ap.add_argument("--factors", type=int, default=w.factors)
    ap.add_argument("--seed", type=int, default=w.seed)
    ap.add_argument("--format", choices=("jsonl", "csv"), default=cfg.ingest.landing_format)
    ap.add_argument("--rows-per-file", type=int, default=1_000_000)
    ap.add_argument(
        "--sampler",
        choices=SAMPLERS,
        default="exact",
        help="item sampler: exact (default) or fast (the same softmax, several times faster on large catalogues)",
    )
    ap.add_argument("--landing", default=cfg.storage.zone("landing"), help="landing zone root")
    ap.add_argument("--truth", default=cfg.storage.zone("ground_truth"), help="ground-truth folder")
    ap.add_argument("--drift", action="append", default=[], metavar="KIND@DAY[:STRENGTH]", help=", ".join(DRIFT_KINDS))
    ap.add_argument(
        "--corrupt", action="append", default=[], metavar="KIND@DAY[:FRACTION]", help=", ".join(CORRUPTION_KINDS)
    )
    return ap


def run(cfg: PipelineConfig, args: argparse.Namespace) -> dict[str, Any]:
    for name in ("days", "users", "items", "factors", "rows_per_file"):
        if getattr(args, name) < 1:
            raise BadArgument(f"--{name.replace('_', '-')} must be at least 1")
    if args.events_per_day < 0:
        raise BadArgument("--events-per-day must not be negative")
    try:
        scenarios = tuple(Scenario.parse(t, DRIFT_KINDS) for t in args.drift) + tuple(
            Scenario.parse(t, CORRUPTION_KINDS) for t in args.corrupt
        )
    except ValueError as exc:
        raise BadArgument(str(exc)) from None
    params = WorldParams(
        args.users, args.items, args.factors, args.seed, args.events_per_day, scenarios=scenarios, sampler=args.sampler
    )
    started = time.perf_counter()
    manifests = generate(params, args.start, args.days, args.landing, args.truth, args.format, args.rows_per_file)
    for m in manifests:
        extra = f" corruptions={m['corruptions']}" if m["corruptions"] else ""
        print(f"{m['day']}: {m.get('rows_written', 0)} rows, {m['duplicates']} redelivered{extra}")
    return {
        "days": len(manifests),
        "rows": sum(m.get("rows_written", 0) for m in manifests),
        "seconds": round(time.perf_counter() - started, 3),
        "landing": args.landing,
        "manifests": manifests,
    }


def main(argv: list[str] | None = None) -> int:
    return run_job(
        "generator",
        build_parser,
        run,
        argv,
        summary=lambda r: (
            f"generated {r['rows']} events in {r['seconds']:.1f}s "
            f"({r['rows'] / max(r['seconds'], 1e-9):,.0f} events/s) under {r['landing']}"
        ),
    )
