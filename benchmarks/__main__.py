"""`python -m benchmarks [--quick] [--markdown FILE] [NAME ...]`: run, then print the table."""

from __future__ import annotations

import argparse
import sys
import time
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path

from benchmarks import (
    engine,
    failover,
    housekeeping,
    idle,
    latency,
    polls,
    scale,
    soak,
    store_write,
)
from benchmarks.common import PROFILE, Figure, machine, progress

BENCHMARKS: dict[str, Callable[[bool], list[Figure]]] = {
    "engine": engine.run,
    "latency": latency.run,
    "scale": scale.run,
    "polls": polls.run,
    "idle": idle.run,
    "housekeeping": housekeeping.run,
    "soak": soak.run,
    "store_write": store_write.run,
    "failover": failover.run,
}


def table(figures: Sequence[Figure]) -> str:
    """The figures as a Markdown table (readable as plain text too)."""
    rows = [("benchmark", "figure", "measured", "target", "result")]
    rows += [(f.benchmark, f.name, f.value, f.target, f.result) for f in figures]
    widths = [max(len(row[i]) for row in rows) for i in range(5)]

    def line(cells: Sequence[str]) -> str:
        return "| " + " | ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)) + " |"

    separator = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    return "\n".join([line(rows[0]), separator, *(line(row) for row in rows[1:])])


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    parser.add_argument("names", nargs="*", metavar="NAME", help=f"any of {', '.join(BENCHMARKS)}")
    parser.add_argument("--quick", action="store_true", help="a shorter pass (~5 minutes)")
    parser.add_argument("--markdown", type=Path, help="also write machine + table to FILE")
    parser.add_argument(
        "--profile",
        type=Path,
        metavar="DIR",
        help="run the daemons under cProfile, write DIR/<benchmark>.prof and print the hot "
        "spots (CPU and latency figures of such a run are inflated by the profiler)",
    )
    parser.add_argument(
        "--soak-minutes",
        type=float,
        metavar="N",
        help=f"length of the soak's churn (default {soak.DEFAULT_MINUTES:g}, "
        f"{soak.QUICK_MINUTES:g} with --quick)",
    )
    parser.add_argument(
        "--soak-kill-at",
        type=float,
        metavar="F",
        help=f"when the soak kills -9 and restarts the daemon, as a share of the churn "
        f"(default {soak.KILL_AT:g}; 0 = never, so one life spans the run)",
    )
    parser.add_argument(
        "--failover-rounds",
        type=int,
        metavar="N",
        help=f"leader take-downs per poll interval in the fail-over benchmark "
        f"(default {failover.ROUNDS}, {failover.QUICK_ROUNDS} with --quick)",
    )
    parser.add_argument(
        "--failover-polls",
        metavar="S,S",
        help="the poll intervals (seconds) of the fail-over benchmark "
        f"(default {','.join(f'{p:g}' for p in failover.POLLS)})",
    )
    args = parser.parse_args(argv)
    if args.failover_rounds is not None:
        failover.SETTINGS["rounds"] = args.failover_rounds
    if args.failover_polls is not None:
        failover.SETTINGS["polls"] = tuple(float(p) for p in args.failover_polls.split(","))
    if args.soak_minutes is not None:
        soak.MINUTES["minutes"] = args.soak_minutes
    if args.soak_kill_at is not None:
        soak.KILL["at"] = args.soak_kill_at
    if args.profile is not None:
        args.profile.mkdir(parents=True, exist_ok=True)
        PROFILE["dir"] = args.profile.resolve()
    names = args.names or list(BENCHMARKS)
    unknown = [name for name in names if name not in BENCHMARKS]
    if unknown:
        parser.error(f"unknown benchmark {', '.join(unknown)}: choose from {', '.join(BENCHMARKS)}")
    host = machine()
    figures: list[Figure] = []
    failed = False
    began = time.monotonic()
    for name in names:
        progress(f"{name}: start{' (quick)' if args.quick else ''}")
        started = time.monotonic()
        try:
            figures += BENCHMARKS[name](args.quick)
        except Exception:
            failed = True
            traceback.print_exc()
            figures.append(Figure(name, "ERROR", "crashed (traceback on stderr)", "", False))
        progress(f"{name}: done in {time.monotonic() - started:.0f}s")
    header = [f"- {key}: {value}" for key, value in host.items()]
    header.append(
        f"- mode: {'--quick' if args.quick else 'full'}"
        f"{', PROFILED (figures inflated)' if args.profile else ''}, "
        f"total {time.monotonic() - began:.0f} s"
    )
    report = "\n".join(header) + "\n\n" + table(figures) + "\n"
    print(report)
    if args.markdown is not None:
        args.markdown.write_text(report, encoding="utf-8")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
