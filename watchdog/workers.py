"""Worker threads that send HTTP requests for the event loop, at half the CPU of asyncio.

Why threads: a request through httpx's sync transport costs about half the CPU of one
through `AsyncClient` (no anyio, no async pool bookkeeping), and at 100 polls a second
that is most of the watchdog's work. `RequestWorkers` runs `size` daemon threads, each
with its own one-connection `httpx.HTTPTransport` (a pool of one never scans idle
neighbours, which cost a quarter of the time in a shared pool of eight). `send` returns
an asyncio future; answers come back to the loop in batches, one wake-up for all the
answers that arrived since the last one, instead of one per request.

Guarantees: at most `size` requests are in flight; each request's own `timeout`
extension bounds it (per phase: connect, write, each read); a request whose future was
cancelled before a worker took it is never sent; the threads are daemon threads, so a
hanging request never delays the process's exit.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import functools
import queue
import ssl
import threading
from dataclasses import dataclass

import httpx

__all__ = ["RequestWorkers", "tls_context"]


@functools.cache
def tls_context() -> ssl.SSLContext:
    """Loading the CA bundle costs ~70 ms: every transport (each worker, each reload) shares one."""
    return httpx.create_ssl_context()


@dataclass(frozen=True, slots=True)
class _Job:
    request: httpx.Request
    future: asyncio.Future[httpx.Response]
    answers: _Answers


class _Answers:
    """Hands finished requests back to one event loop: one wake-up per burst of answers."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self._lock = threading.Lock()
        self._done: collections.deque[tuple[_Job, httpx.Response | BaseException]] = (
            collections.deque()
        )
        self._wake_pending = False

    def put(self, job: _Job, outcome: httpx.Response | BaseException) -> None:
        """From a worker thread."""
        with self._lock:
            self._done.append((job, outcome))
            if self._wake_pending:
                return
            self._wake_pending = True
        with contextlib.suppress(RuntimeError):  # a closed loop: nobody waits any more
            self.loop.call_soon_threadsafe(self._deliver)

    def _deliver(self) -> None:
        with self._lock:
            done = list(self._done)
            self._done.clear()
            self._wake_pending = False
        for job, outcome in done:
            if job.future.done():  # cancelled meanwhile
                continue
            if isinstance(outcome, BaseException):
                job.future.set_exception(outcome)
            else:
                job.future.set_result(outcome)


class RequestWorkers:
    """`size` threads sending requests; `send` is called from the event loop."""

    def __init__(self, size: int) -> None:
        if size < 1:
            raise ValueError(f"size must be >= 1, got {size}")
        self.size = size
        self._jobs: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._answers: _Answers | None = None
        self._stopped = False
        tls_context()  # load the CA bundle once, here, not in every worker at once
        for number in range(size):
            threading.Thread(target=self._work, name=f"poll-{number}", daemon=True).start()

    def send(self, request: httpx.Request) -> asyncio.Future[httpx.Response]:
        """Queue `request`; the future gets the response (body read) or the httpx error."""
        if self._stopped:
            raise RuntimeError("send() on stopped RequestWorkers")
        loop = asyncio.get_running_loop()
        if self._answers is None or self._answers.loop is not loop:
            self._answers = _Answers(loop)
        future: asyncio.Future[httpx.Response] = loop.create_future()
        self._jobs.put(_Job(request, future, self._answers))
        return future

    def stop(self) -> None:
        """Let the threads end once the jobs already queued are done (or dropped if cancelled)."""
        self._stopped = True
        for _ in range(self.size):
            self._jobs.put(None)

    def _work(self) -> None:
        transport = httpx.HTTPTransport(
            verify=tls_context(),
            limits=httpx.Limits(
                max_connections=1, max_keepalive_connections=1, keepalive_expiry=30
            ),
        )
        try:
            while (job := self._jobs.get()) is not None:
                if job.future.done():  # cancelled while queued: do not send it
                    continue
                try:
                    outcome: httpx.Response | BaseException = _send(transport, job.request)
                except Exception as exc:
                    outcome = exc
                job.answers.put(job, outcome)
        finally:
            transport.close()


def _send(transport: httpx.HTTPTransport, request: httpx.Request) -> httpx.Response:
    response = transport.handle_request(request)
    response.request = request
    try:
        response.read()
    finally:
        response.close()
    return response
