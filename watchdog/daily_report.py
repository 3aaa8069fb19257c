"""The daemon's daily report task: queue the previous day's report once a day.

What is guaranteed:

* Once `[report] at` has passed in `tz`, the previous day's report is queued in the
  outbox (`watchdog.notify.report_card.report_notification`), like any notification:
  delivered in order, retried through outages, exactly once in bot mode.
* The day reported last is kept in the store's meta, written in the same transaction as
  the queued report: a report is queued once, whatever restarts come between.
* A report missed while the daemon was down is queued when it comes back (only the
  latest missed day: `watchdog.report.due_day`). On the first start with `[report]`
  (nothing reported yet) no past day is queued: the first report is the next one due.

The task reads the clock through the injected `Clock`, so tests run it on their own time.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import date, datetime, timedelta

from watchdog.audit import Event, get_logger
from watchdog.clock import Clock, sleep_or_stop
from watchdog.errors import StateError
from watchdog.model import Notification
from watchdog.notify.report_card import report_notification
from watchdog.report import day_span, due_day, report_of
from watchdog.rules import Config, ReportSection
from watchdog.store import Store

__all__ = ["CHECK_SECONDS", "LAST_DAY_KEY", "DailyReport"]

LAST_DAY_KEY = "report.last_day"
"""Meta key of the last day whose report was queued (ISO date)."""
CHECK_SECONDS = 1.0
"""How often the task looks whether a report is due (a date comparison, cheap)."""


class DailyReport:
    """Queues the daily report when due; `run` until stopped (see the module docstring)."""

    def __init__(
        self,
        store: Store,
        clock: Clock,
        *,
        config: Callable[[], Config],
        channel: Callable[[ReportSection], str],
        resolution: timedelta,
        wake: Callable[[], None],
    ) -> None:
        self._store = store
        self._clock = clock
        self._config = config
        self._channel = channel
        self._wake = wake
        self._log = get_logger()
        self._last_day: date | None = None
        self._loaded = False
        self._failed_day: date | None = None
        """A day whose report could not be built: not tried again until a restart."""
        self._resolution = resolution
        """The spacing of thinned history (see `watchdog.report.report_of`)."""

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                await self.queue_if_due()
            except StateError as exc:
                self._log.error(Event.STATE_ERROR, error=str(exc), during="report")
            await sleep_or_stop(self._clock, CHECK_SECONDS, stop)

    async def queue_if_due(self) -> date | None:
        """Queue the report due now, if any; the day queued."""
        config = self._config()
        section = config.report
        if section is None:
            return None
        now = self._clock.now()
        if not self._loaded:
            stored = self._store.get_meta(LAST_DAY_KEY)
            self._last_day = None if stored is None else date.fromisoformat(stored)
            self._loaded = True
        day = due_day(now, section, self._last_day)
        if day is None:
            return None
        if self._last_day is None:  # the first start with [report]: nothing was missed
            self._store.set_meta(LAST_DAY_KEY, day.isoformat())
            self._last_day = day
            return None
        if day == self._failed_day:
            return None
        try:
            note = await asyncio.to_thread(self._build, config, section, day, now)
        except Exception as exc:  # a report is not worth an alert lost: log it and go on
            self._failed_day = day
            self._log.error(
                Event.REPORT_FAILED, day=day.isoformat(), error=type(exc).__name__, message=str(exc)
            )
            return None
        self._store.enqueue_with_meta(note, key=LAST_DAY_KEY, value=day.isoformat())
        self._last_day = day
        self._log.info(
            Event.REPORT_QUEUED, day=day.isoformat(), channel=note.channel, alert_id=note.alert_id
        )
        self._wake()
        return day

    def _build(
        self, config: Config, section: ReportSection, day: date, now: datetime
    ) -> Notification:
        start, end = day_span(day, section)
        samples = [s for s in self._store.load_samples(since=start) if s.at < end]
        report = report_of(config, samples, start=start, end=end, resolution=self._resolution)
        return report_notification(report, day=day, channel=self._channel(section), at=now)
