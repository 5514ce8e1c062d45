"""One policy's engine, driven in its own thread: requests join its running batch as they arrive.

The HTTP side (asyncio) builds a `Ticket` per request (its row checked and built there, so a bad prompt is
a 400 before anything waits) and `submit`s it; the engine thread admits waiting tickets into the running
batch at each step boundary while fewer than `max_num_seqs` rows decode (vLLM's rule: running rows first,
then the waiting), steps the batch, and hands each ticket its new text through the ticket's asyncio queue
(`call_soon_threadsafe`). A ticket whose client went away is cancelled: its row leaves at the next step.
More than `max_waiting` tickets waiting is a 503 with Retry-After. Finished generations go to the decision
log through a bounded queue (`cascade.serve.logbook`), never written from this thread. If the loop dies,
every ticket in flight gets a 500 and `/health` says 503.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import queue
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import torch

from cascade.serve.protocol import APIError

log = logging.getLogger("cascade.serve")

STOP_HOLD = "\ufffd"  # a partial UTF-8 character: held back until the next token completes it


@dataclass(eq=False)
class Ticket:
    """One request in flight."""

    id: int
    row: Any  # the engine's Row (cascade.decode.row)
    prompt_text: str  # what the decision log stores
    alpha: float
    loop: asyncio.AbstractEventLoop
    rule: str = ""  # the row's deferral rule
    events: asyncio.Queue = field(default_factory=asyncio.Queue)
    arrival: float = field(default_factory=time.perf_counter)
    admitted: float | None = None
    first: float | None = None  # the first token's time
    last: float | None = None
    sent_tokens: int = 0
    sent_text: str = ""
    # incremental detokenization (TGI's offsets): the text of the tokens decoded so far, and where the next
    # decode starts (a few tokens back, so that merges across the boundary come out right)
    text: str = ""
    prefix_offset: int = 0
    read_offset: int = 0
    done: bool = False

    def put(self, event: tuple) -> None:
        """From the engine thread: an event for the request's handler ("text", delta), ("done", generation)
        or ("error", APIError)."""
        try:
            self.loop.call_soon_threadsafe(self.events.put_nowait, event)
        except RuntimeError:  # the server's event loop is gone (shutting down): nobody waits any more
            pass


class EngineLoop:
    def __init__(
        self,
        name: str,
        engine: Any,
        metrics: Any,
        max_num_seqs: int = 8,
        max_waiting: int = 64,
        logbook: Any = None,
    ):
        self.name, self.engine, self.metrics, self.logbook = name, engine, metrics, logbook
        # a batch that cannot take rows while it decodes (the sequential cascade, a batched drafter without
        # `joins_rows`) decodes one request at a time
        self.max_num_seqs = max_num_seqs if engine.joins_rows else 1
        self.max_waiting = max_waiting
        self.rule = engine.rule.name
        self.inbox: queue.Queue = queue.Queue()
        self.pending: collections.deque[Ticket] = collections.deque()  # submitted, not yet admitted
        self.active: dict[int, Ticket] = {}  # admitted, decoding
        self.error: BaseException | None = None
        self.joined_live = 0  # requests admitted into a batch that was decoding others (continuous batching)
        self._stop = threading.Event()
        self._ids = iter(range(1 << 62))
        self._lock = threading.Lock()
        self.thread = threading.Thread(target=self._run, name=f"cascade-engine-{name}", daemon=True)

    # ------------------------------------------------------------------ the HTTP side

    def next_id(self) -> int:
        with self._lock:
            return next(self._ids)

    @property
    def alive(self) -> bool:
        return self.thread.is_alive() and self.error is None

    def submit(self, ticket: Ticket) -> None:
        if not self.alive:
            raise APIError(503, f"the engine of {self.name!r} is not running", kind="service_unavailable")
        waiting = self.inbox.qsize() + len(self.pending)
        if waiting >= self.max_waiting:
            raise APIError(503, f"{self.name!r}: {waiting} requests are waiting already; retry shortly")
        self.inbox.put(("submit", ticket))

    def cancel(self, ticket: Ticket) -> None:
        """The client went away: its row leaves at the next step (or never joins)."""
        if not ticket.done:
            self.inbox.put(("cancel", ticket))

    def start(self) -> None:
        self.thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        self.inbox.put(("wake", None))
        self.thread.join(timeout)

    # ------------------------------------------------------------------ the engine thread

    def _run(self) -> None:
        try:
            with torch.inference_mode():
                self._loop()
        except BaseException as exc:  # the loop died: every request in flight is told, /health turns 503
            self.error = exc
            log.exception("engine loop of %s died", self.name)
            failure = APIError(500, f"the engine of {self.name!r} failed: {exc}", kind="internal_error")
            for ticket in [*self.active.values(), *self.pending]:
                ticket.put(("error", failure))
            self._drain(block=False)
            while self.pending:
                self.pending.popleft().put(("error", failure))

    def _loop(self) -> None:
        batch = self.engine.running_batch(on_step=self._on_step)
        while not self._stop.is_set():
            cancels = self._drain(block=not batch and not self.pending)
            for ticket in cancels:
                if ticket.id in self.active:
                    batch.cancel(ticket.id)
            room = self.max_num_seqs - len(batch.live) - len(batch.waiting)
            joining = []
            while room > 0 and self.pending:
                ticket = self.pending.popleft()
                ticket.admitted = time.perf_counter()
                self.active[ticket.id] = ticket
                self.metrics.prompt_tokens.labels(self.name).inc(int(ticket.row.prompt.shape[0]))
                joining.append(ticket.row)
                room -= 1
            if joining:
                self.joined_live += len(joining) if batch.live else 0
                batch.join(joining)
            self._gauges(batch)
            if not batch:
                continue
            finished = batch.step()
            now = time.perf_counter()
            done = {row.index for row, _ in finished}
            for index, ticket in self.active.items():
                if index not in done:
                    self._stream(ticket, now)
            for row, generation in finished:
                self._finish(self.active.pop(row.index), generation, now)
            self._gauges(batch)

    def _drain(self, block: bool) -> list[Ticket]:
        """Take what arrived: new tickets join `pending`; the cancelled are returned (or dropped if still waiting)."""
        cancels: list[Ticket] = []
        try:
            item = self.inbox.get(timeout=0.5) if block else self.inbox.get_nowait()
            while True:
                kind, ticket = item
                if kind == "submit":
                    self.pending.append(ticket)
                elif kind == "cancel":
                    if ticket in self.pending:
                        self.pending.remove(ticket)
                        ticket.done = True
                        self.metrics.success.labels(self.name, "abort").inc()
                    else:
                        cancels.append(ticket)
                item = self.inbox.get_nowait()
        except queue.Empty:
            pass
        return cancels

    def _gauges(self, batch: Any) -> None:
        self.metrics.load(self.name, len(batch.live) + len(batch.waiting), len(self.pending) + self.inbox.qsize())

    def _on_step(self, step: Any) -> None:
        ticket = self.active.get(step.row)
        rule = ticket.rule if ticket is not None and ticket.rule else self.rule  # a request may bring its own
        self.metrics.step(self.name, rule, step.drafted, step.accepted, step.deferred, len(step.emitted))

    def _stream(self, ticket: Ticket, now: float) -> None:
        """A live row's new text since the last step (held back while it may still become a stop string)."""
        row = ticket.row
        if len(row.generated) == ticket.sent_tokens:
            return
        ticket.sent_tokens = len(row.generated)
        if ticket.first is None:
            ticket.first = now
        elif ticket.last is not None:
            self.metrics.itl.labels(self.name).observe(now - ticket.last)
        ticket.last = now
        self._detokenize(ticket, row.generated)
        text = _held_back(row.stopper.trim(ticket.text), row.stopper.stops)
        if text.startswith(ticket.sent_text) and len(text) > len(ticket.sent_text):
            ticket.put(("text", text[len(ticket.sent_text) :]))
            ticket.sent_text = text

    def _detokenize(self, ticket: Ticket, tokens: list[int]) -> None:
        """Extend the ticket's text with its new tokens, decoding only the tail (not the whole text each step)."""
        decode = self.engine.tokenizer.decode
        before = decode(tokens[ticket.prefix_offset : ticket.read_offset], skip_special_tokens=True)
        after = decode(tokens[ticket.prefix_offset :], skip_special_tokens=True)
        if len(after) > len(before) and not after.endswith(STOP_HOLD):  # a partial character waits for the next token
            ticket.text += after[len(before) :]
            ticket.prefix_offset, ticket.read_offset = ticket.read_offset, len(tokens)

    def _finish(self, ticket: Ticket, generation: Any, now: float) -> None:
        if generation.token_ids and len(generation.token_ids) > ticket.sent_tokens:
            if ticket.first is None:
                ticket.first = now
            elif ticket.last is not None:
                self.metrics.itl.labels(self.name).observe(now - ticket.last)
            ticket.last = now
        ticket.done = True
        assert ticket.admitted is not None
        self.metrics.finished(self.name, generation, ticket.arrival, ticket.admitted, ticket.first, ticket.last or now)
        if generation.text.startswith(ticket.sent_text) and len(generation.text) > len(ticket.sent_text):
            ticket.put(("text", generation.text[len(ticket.sent_text) :]))
            ticket.sent_text = generation.text
        ticket.put(("done", generation))
        if self.logbook is not None and generation.finish_reason != "abort":
            self.logbook.put(ticket.prompt_text, generation)


def _held_back(text: str, stops: list[str]) -> str:
    """`text` less a trailing partial character and the longest suffix that begins a stop string."""
    text = text.rstrip(STOP_HOLD)
    cut = 0
    for s in stops:
        for n in range(min(len(s) - 1, len(text)), 0, -1):
            if text.endswith(s[:n]):
                cut = max(cut, n)
                break
    return text[: len(text) - cut] if cut else text
