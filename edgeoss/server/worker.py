"""The engine thread: one loop that steps every running request together (continuous batching).

HTTP handlers never compute: they submit a Job and read its tokens from an asyncio queue that
this thread fills through the event loop's call_soon_threadsafe. At most `parallel` requests
run at once; up to `queue_limit` more wait, and beyond that `submit` raises Busy (a 429).
A job cancelled by its handler (its client went away) leaves at the next step, and its
sequence goes back to the prefix cache.
"""

from __future__ import annotations

import asyncio
import collections
import threading
import time
from dataclasses import dataclass, field

from ..engine.prefix_cache import PrefixCache
from ..engine.scheduler import Request, Scheduler


class Busy(Exception):
    """Every sequence is running and the queue is full."""


@dataclass
class Finished:
    reason: str                 # "stop" (a stop token), "length", "cancelled" or "error"
    error: str | None = None


@dataclass(eq=False)
class Job:
    request: Request
    loop: asyncio.AbstractEventLoop
    events: asyncio.Queue = field(default_factory=asyncio.Queue)  # token ids, then one Finished
    cancelled: bool = False
    background: bool = False          # preparing a likely next prompt: yields to every real request
    submitted: float = field(default_factory=time.perf_counter)
    started: float | None = None      # when it got a sequence
    first_token: float | None = None

    def post(self, item) -> None:
        try:
            self.loop.call_soon_threadsafe(self.events.put_nowait, item)
        except RuntimeError:  # the event loop is gone (shutting down): nobody is listening
            pass


class EngineWorker:
    def __init__(self, model, parallel: int = 1, queue_limit: int = 16, cache_ram: int = 0):
        self.model = model
        self.parallel = max(1, int(parallel))
        self.queue_limit = max(0, int(queue_limit))
        self.prefix_cache = PrefixCache(model, cache_ram) if cache_ram > 0 else None
        self.scheduler = Scheduler(model, prefix_cache=self.prefix_cache)
        self._waiting: collections.deque[Job] = collections.deque()
        self._background: collections.deque[Job] = collections.deque(maxlen=2 * self.parallel)
        self._running: dict[int, Job] = {}   # id(request) -> job
        self._cv = threading.Condition()
        self._stopping = False
        self._draining = False
        # counters for /metrics
        self.completed = 0
        self.generated_tokens = 0
        self.prompt_tokens = 0
        self.cached_tokens = 0
        self._recent: collections.deque[tuple[float, int]] = collections.deque()  # (time, tokens) of steps
        self.thread = threading.Thread(target=self._run, name="edgeoss-engine", daemon=True)

    # -- called from the event loop -------------------------------------------------------------
    def start(self) -> None:
        self.thread.start()

    def submit(self, job: Job) -> Job:
        with self._cv:
            if self._stopping or self._draining:
                raise Busy("the server is shutting down")
            if self.running >= self.parallel and len(self._waiting) >= self.queue_limit:
                raise Busy(f"all {self.parallel} sequences are busy and {len(self._waiting)} requests are waiting")
            self._waiting.append(job)
            self._cv.notify()
        return job

    def prepare(self, job: Job) -> None:
        """Queue background work (a likely next prompt brought into the prefix cache); it runs only
        in a free slot, gives its slot up to any real request, and the oldest is dropped when too
        many wait."""
        job.background = True
        with self._cv:
            if not (self._stopping or self._draining):
                self._background.append(job)
                self._cv.notify()

    def cancel(self, job: Job) -> None:
        with self._cv:
            job.cancelled = True
            self._cv.notify()

    @property
    def queue_depth(self) -> int:
        return len(self._waiting)

    @property
    def running(self) -> int:
        """Requests running (background preparation not counted)."""
        return sum(not j.background for j in list(self._running.values()))

    @property
    def preparing(self) -> int:
        return sum(j.background for j in list(self._running.values())) + len(self._background)

    def tokens_per_second(self, window: float = 10.0) -> float:
        """Generated tokens per second over the last `window` seconds."""
        now = time.perf_counter()
        recent = [(t, n) for t, n in list(self._recent) if now - t <= window]
        if not recent:
            return 0.0
        return sum(n for _, n in recent) / max(now - recent[0][0], 1e-3) if len(recent) > 1 else 0.0

    def stop(self, grace: float = 5.0) -> None:
        """Finish running requests for up to `grace` seconds, cancel the rest, end the thread."""
        with self._cv:
            self._draining = True
            for job in self._waiting:
                job.post(Finished("cancelled", "the server is shutting down"))
            self._waiting.clear()
            self._background.clear()
            for job in self._running.values():
                if job.background:
                    job.cancelled = True
        deadline = time.monotonic() + grace
        while self._running and time.monotonic() < deadline and self.thread.is_alive():
            time.sleep(0.05)
        with self._cv:
            self._stopping = True
            self._cv.notify()
        if self.thread.is_alive():
            self.thread.join(timeout=max(1.0, grace))

    # -- the engine thread --------------------------------------------------------------------
    def _run(self) -> None:
        while True:
            with self._cv:
                while not self._stopping and not self._running and not self._waiting and not self._background:
                    self._cv.wait()
                if self._stopping:
                    break
                # a real request waiting for a slot takes one from background preparation
                free = self.parallel - len(self._running)
                for job in [j for j in self._running.values() if j.background][:max(0, len(self._waiting) - free)]:
                    job.cancelled = True
                admit = []
                while self._waiting and len(self._running) + len(admit) < self.parallel:
                    job = self._waiting.popleft()
                    if not job.cancelled:
                        admit.append(job)
                if not self._waiting:
                    while self._background and len(self._running) + len(admit) < self.parallel:
                        admit.append(self._background.popleft())
                cancelled = [j for j in self._running.values() if j.cancelled]
            for job in cancelled:
                self.scheduler.cancel(job.request)
                self._finish(job, Finished("cancelled"))
            for job in admit:
                self._admit(job)
            if self.scheduler.active:
                self._step()
        for job in list(self._running.values()):
            self.scheduler.cancel(job.request)
            self._finish(job, Finished("cancelled", "the server is shutting down"))

    def _admit(self, job: Job) -> None:
        try:
            self.scheduler.add(job.request)
        except Exception as e:  # noqa: BLE001 - a request that cannot start fails alone
            job.post(Finished("error", f"{type(e).__name__}: {e}"))
            return
        job.started = time.perf_counter()
        self._running[id(job.request)] = job
        if not job.background:
            self.prompt_tokens += job.request.usage.prompt_tokens
            self.cached_tokens += job.request.usage.cached_tokens

    def _step(self) -> None:
        try:
            out = self.scheduler.step()
        except Exception as e:  # noqa: BLE001 - the pass failed: fail its requests, keep serving
            for job in list(self._running.values()):
                self.scheduler.cancel(job.request)
                self._finish(job, Finished("error", f"{type(e).__name__}: {e}"))
            return
        now = time.perf_counter()
        out = [(r, t) for r, t in out if not self._running[id(r)].background]
        for request, token in out:
            job = self._running[id(request)]
            if job.first_token is None:
                job.first_token = now
            job.post(token)
        if out:
            self.generated_tokens += len(out)
            self._recent.append((now, len(out)))
            while self._recent and now - self._recent[0][0] > 60:
                self._recent.popleft()
        for job in [j for j in self._running.values() if j.request.done]:
            r = job.request
            if r.error:
                self._finish(job, Finished("error", r.error))
            elif r.tokens and r.tokens[-1] in r.stop:
                self._finish(job, Finished("stop"))
            else:
                self._finish(job, Finished("length"))

    def _finish(self, job: Job, result: Finished) -> None:
        self._running.pop(id(job.request), None)
        if not job.background:
            self.completed += 1
            job.post(result)
