"""The decision log of served requests, written off the serving path: a bounded queue and one writer thread.

Each policy served with logging on is one run in the store (`source: cascade serve`), each finished request
one sequence of it, with its steps and decisions, so the dashboard shows served traffic like any other. The
engine thread only `put`s finished generations; a full queue, or a store that fails (locked, gone), drops
rows with a logged warning and counts them in `cascade:store_dropped`, and requests keep being served.
"""

from __future__ import annotations

import logging
import queue
import threading
from typing import Any

log = logging.getLogger("cascade.serve")

_STOP = object()


class Logbook:
    def __init__(self, name: str, run: Any, metrics: Any, capacity: int = 1024):
        self.name, self.run, self.metrics = name, run, metrics
        self.queue: queue.Queue = queue.Queue(maxsize=capacity)
        self.written = 0
        self.dropped = 0
        self.thread = threading.Thread(target=self._write, name=f"cascade-logbook-{name}", daemon=True)
        self.thread.start()

    def put(self, prompt_text: str, generation: Any) -> None:
        """From the engine thread: never blocks."""
        try:
            self.queue.put_nowait((prompt_text, generation))
        except queue.Full:
            self._drop("the decision-log queue is full")

    def close(self, timeout: float = 30.0) -> None:
        """Write what is queued, then end the run."""
        self.queue.put(_STOP)
        self.thread.join(timeout)
        if self.thread.is_alive():  # the store is too slow to drain the queue in time: say what is not written
            log.warning(
                "%s: %d served requests were still waiting to be logged at shutdown", self.name, self.queue.qsize()
            )
        try:
            self.run.finish()
        except Exception as exc:  # the store is gone: the rows already dropped were counted
            log.warning("%s: could not close the served run in the store: %s", self.name, exc)

    def _write(self) -> None:
        while True:
            item = self.queue.get()
            if item is _STOP:
                return
            prompt_text, generation = item
            try:
                self.run.log_generation(prompt_text, generation)
                self.run.flush()
                self.written += 1
            except Exception as exc:  # a locked or missing database must not stop serving
                self._drop(f"the store failed: {exc}")

    def _drop(self, why: str) -> None:
        self.dropped += 1
        self.metrics.store_dropped.labels(self.name).inc()
        log.warning(
            "%s: a served request's decisions were not logged (%s); %d dropped so far", self.name, why, self.dropped
        )
