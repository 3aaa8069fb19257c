"""The rule engine alone, in this process: evaluations per second, and window independence.

* Throughput: 1,000 agents plus the workspace, 3 rules each (a threshold with hysteresis
  and `for`, a percentage-drop change rule over 5m, an absolute-rise change rule over
  10m), fed samples 15 s apart in time order. One evaluation is one rule on one sample,
  so evaluations = samples x 3. "Quiet" counts wobble around a level and never cross a
  rule (the normal case); "churning" counts jump at random, so alerts start and end on a
  sizeable share of samples (the engine then also builds transitions).
* Window independence: one change rule on one series, with a window of 10 samples and
  of 10,000 samples, each warmed to a full window first; the time per evaluation of the
  two must be within 20 %. The two alternate, one after the other, in this process.

Samples are built before the clock starts: what is timed is `Engine.observe` only, in
CPU time of this process (`time.process_time`), so that other work on the machine
taking the core away does not count as engine time.
"""

from __future__ import annotations

import random
import time
from datetime import UTC, datetime, timedelta

from benchmarks.common import Figure, at_most, info, median, progress
from watchdog.engine import Engine
from watchdog.model import WORKSPACE, Sample
from watchdog.rules import Config, parse_config

NAME = "engine"
STEP = timedelta(seconds=15)
START = datetime(2025, 1, 6, 0, 0, tzinfo=UTC)
TARGET_RATE = 500_000


def scale_config(agents: int) -> Config:
    lines = ["[watchdog]", 'poll_interval = "15s"', "", "[slack]", 'channel = "#bench"', ""]
    for i in range(agents):
        lines += ["[[agents]]", f'name = "a{i:04d}"', f'id = "agent_{i:04d}"', ""]
    scope = '["workspace", "*"]'
    lines += [
        "[[rules]]",
        'name = "busy"',
        'kind = "threshold"',
        f"scope = {scope}",
        "above = 20",
        "recover_below = 15",
        'for = "30s"',
        "",
        "[[rules]]",
        'name = "collapse"',
        'kind = "change"',
        f"scope = {scope}",
        'window = "5m"',
        "drop_pct = 50",
        "min_base = 5",
        "",
        "[[rules]]",
        'name = "surge"',
        'kind = "change"',
        f"scope = {scope}",
        'window = "10m"',
        "rise = 15",
        "",
    ]
    return parse_config("\n".join(lines), source="bench")


def _samples(config: Config, cycles: int, *, churn: bool, seed: int) -> list[Sample]:
    rng = random.Random(seed)
    names = [name for name, _ in config.series]
    level = {name: rng.randint(6, 10) for name in names}
    out: list[Sample] = []
    for cycle in range(cycles):
        at = START + cycle * STEP
        for name in names:
            count = rng.randint(0, 30) if churn else level[name] + rng.randint(-1, 1)
            out.append(Sample(name, at, count))
    return out


def _throughput(config: Config, samples: list[Sample], warm: list[Sample]) -> tuple[float, int]:
    """Evaluations per second over `samples` after `warm`, and transitions produced."""
    engine = Engine(config, started_at=START)
    for sample in warm:
        engine.observe(sample)
    rules_per_series = {name: 0 for name, _ in config.series}
    for series in config.scopes.values():
        for name in series:
            rules_per_series[name] += 1
    evaluations = sum(rules_per_series[s.series] for s in samples)
    transitions = 0
    observe = engine.observe
    began = time.process_time()
    for sample in samples:
        transitions += len(observe(sample))
    took = time.process_time() - began
    return evaluations / took, transitions


def _window_config(window_samples: int) -> Config:
    window = window_samples * int(STEP.total_seconds())
    text = f"""
[watchdog]
poll_interval = "15s"
retention = "30d"

[[rules]]
name = "drop"
kind = "change"
scope = "workspace"
window = "{window}s"
drop_pct = 50
min_base = 5
"""
    return parse_config(text, source="bench")


def _per_evaluation(window_samples: int, timed: int, seed: int) -> float:
    """Seconds per evaluation of one change rule whose window holds `window_samples`."""
    rng = random.Random(seed)
    config = _window_config(window_samples)
    engine = Engine(config, started_at=START)
    total = window_samples + 10 + timed
    samples = [Sample(WORKSPACE, START + i * STEP, 8 + rng.randint(-1, 1)) for i in range(total)]
    warm, timed_samples = samples[: window_samples + 10], samples[window_samples + 10 :]
    for sample in warm:
        engine.observe(sample)
    observe = engine.observe
    began = time.process_time()
    for sample in timed_samples:
        observe(sample)
    return (time.process_time() - began) / len(timed_samples)


def run(quick: bool) -> list[Figure]:
    agents = 1000
    config = scale_config(agents)
    cycles = 20 if quick else 100
    repeats = 3 if quick else 7
    warm_cycles = 41  # fills the 10m window (40 samples at 15 s) so change rules evaluate
    progress(f"{NAME}: {agents + 1} series x 3 rules, {cycles} cycles per run, {repeats} runs")
    figures: list[Figure] = []
    for label, churn in (("quiet", False), ("churning", True)):
        all_samples = _samples(config, warm_cycles + cycles, churn=churn, seed=7)
        split = warm_cycles * (agents + 1)
        rates, transitions = [], 0
        for _ in range(repeats):
            rate, transitions = _throughput(config, all_samples[split:], all_samples[:split])
            rates.append(rate)
        timed = len(all_samples) - split
        if label == "quiet":
            figures.append(
                Figure(
                    NAME,
                    "sample-rule evaluations/s, quiet counts (median; range)",
                    f"{median(rates):,.0f}/s ({min(rates):,.0f}-{max(rates):,.0f})",
                    f">= {TARGET_RATE:,}/s",
                    median(rates) >= TARGET_RATE,
                )
            )
        else:
            figures.append(
                info(
                    NAME,
                    "sample-rule evaluations/s, churning counts (median)",
                    f"{median(rates):,.0f}/s ({transitions / timed:.2f} transitions per sample)",
                )
            )
    small, large = 10, 10_000
    timed = 50_000 if quick else 200_000
    progress(f"{NAME}: change window {small} vs {large} samples, {timed} evaluations per run")
    costs: dict[int, list[float]] = {small: [], large: []}
    for repeat in range(repeats):
        for window in (small, large):
            costs[window].append(_per_evaluation(window, timed, seed=repeat))
    cost_small, cost_large = median(costs[small]), median(costs[large])
    ratio = max(cost_small, cost_large) / min(cost_small, cost_large)
    figures += [
        info(
            NAME,
            f"change rule, {small}-sample window (median; range)",
            f"{cost_small * 1e6:.2f} µs/evaluation ({_range_us(costs[small])})",
        ),
        info(
            NAME,
            f"change rule, {large:,}-sample window (median; range)",
            f"{cost_large * 1e6:.2f} µs/evaluation ({_range_us(costs[large])})",
        ),
        at_most(NAME, "slower / faster of the two windows", ratio, 1.2, "x", ".3f"),
    ]
    return figures


def _range_us(seconds: list[float]) -> str:
    return f"{min(seconds) * 1e6:.2f}-{max(seconds) * 1e6:.2f}"
