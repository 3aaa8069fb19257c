"""Benchmarks of the watchdog: the real daemon process against loopback fakes.

Run them all with `uv run python -m benchmarks` (about 16 minutes on 2 cores), a shorter
pass with `--quick` (about 4 minutes), or some by name: `python -m benchmarks engine idle`.
Each prints its figures with their targets and PASS/MISS; BENCHMARKS.md records a run.
These are measurements, not tests: a missed target is reported, never asserted.
"""
