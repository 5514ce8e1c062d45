"""Prometheus metrics of `cascade serve`: vLLM's names under a `cascade:` prefix, labelled by policy.

Counters (exposed with `_total`): spec_decode_num_drafts, _num_draft_tokens, _num_accepted_tokens,
_num_accepted_tokens_per_pos{position} (position i counts the steps that accepted more than i drafts, as
vLLM counts), deferred_tokens{rule}, prompt_tokens, generation_tokens, request_success{finished_reason},
store_dropped (decision-log rows dropped so serving never blocks). Gauges: num_requests_running,
num_requests_waiting. Histograms (vLLM's buckets): time_to_first_token_seconds, inter_token_latency_seconds,
request_time_per_output_token_seconds, e2e_request_latency_seconds, request_queue_time_seconds and
request_spec_decode_acceptance_rate (a finished request's accepted / drafted: near 0 goes with garbled
output, near 1 with loops; users asked vLLM for it as a quality alarm).

`vllm_names=True` (`cascade serve --vllm-metric-names`) also exports the two load gauges under vLLM's names,
`vllm:num_requests_running` and `vllm:num_requests_waiting` (label `model_name`), which routers such as
vLLM's production-stack router read from each backend to balance N `cascade serve` processes.

The metric classes are class attributes (`counter_cls`, `gauge_cls`, `histogram_cls`): a backend whose
metric system differs (Ray's) swaps them, as vLLM's Ray wrappers do.
"""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, disable_created_metrics, generate_latest

TTFT_BUCKETS = (0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0, 20.0, 40.0)
ITL_BUCKETS = (0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0, 20.0, 40.0)
E2E_BUCKETS = (0.3, 0.5, 0.8, 1.0, 1.5, 2.0, 2.5, 5.0, 10.0, 15.0, 20.0, 30.0, 40.0, 50.0, 60.0, 120.0, 240.0, 480.0)
RATE_BUCKETS = (0.0, 0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 1.0)
PREFIX = "cascade:"


class ServeMetrics:
    counter_cls: Any = Counter
    gauge_cls: Any = Gauge
    histogram_cls: Any = Histogram

    def __init__(self, registry: CollectorRegistry | None = None, vllm_names: bool = False):
        disable_created_metrics()  # no `_created` series beside each counter (as vLLM exports them)
        self.registry = registry or CollectorRegistry()
        r = self.registry

        def counter(name: str, doc: str, *labels: str) -> Any:
            return self.counter_cls(PREFIX + name, doc, ["policy", *labels], registry=r)

        def histogram(name: str, doc: str, buckets: tuple[float, ...]) -> Any:
            return self.histogram_cls(PREFIX + name, doc, ["policy"], buckets=buckets, registry=r)

        self.num_drafts = counter("spec_decode_num_drafts", "verification steps that drafted")
        self.num_draft_tokens = counter("spec_decode_num_draft_tokens", "drafted tokens")
        self.num_accepted_tokens = counter("spec_decode_num_accepted_tokens", "accepted drafted tokens")
        self.accepted_per_pos = counter(
            "spec_decode_num_accepted_tokens_per_pos", "steps that accepted the draft at this position", "position"
        )
        self.deferred = counter("deferred_tokens", "drafted tokens the rule deferred to the target", "rule")
        self.prompt_tokens = counter("prompt_tokens", "prompt tokens of admitted requests")
        self.generation_tokens = counter("generation_tokens", "tokens generated")
        self.success = counter("request_success", "finished requests", "finished_reason")
        self.store_dropped = counter("store_dropped", "decision-log rows dropped (queue full or store down)")
        self.running = self.gauge_cls(PREFIX + "num_requests_running", "rows decoding", ["policy"], registry=r)
        self.waiting = self.gauge_cls(PREFIX + "num_requests_waiting", "requests waiting", ["policy"], registry=r)
        self.vllm_load: tuple[Any, Any] | None = None
        if vllm_names:  # the same two gauges under vLLM's names, for routers that read them
            self.vllm_load = (
                self.gauge_cls("vllm:num_requests_running", "rows decoding", ["model_name"], registry=r),
                self.gauge_cls("vllm:num_requests_waiting", "requests waiting", ["model_name"], registry=r),
            )
        self.ttft = histogram("time_to_first_token_seconds", "arrival to first token", TTFT_BUCKETS)
        self.itl = histogram("inter_token_latency_seconds", "between streamed tokens", ITL_BUCKETS)
        self.tpot = histogram("request_time_per_output_token_seconds", "per request, after the first", ITL_BUCKETS)
        self.e2e = histogram("e2e_request_latency_seconds", "arrival to the last token", E2E_BUCKETS)
        self.queue = histogram("request_queue_time_seconds", "arrival to admission into the batch", E2E_BUCKETS)
        self.acceptance = histogram(
            "request_spec_decode_acceptance_rate", "a finished request's accepted / drafted tokens", RATE_BUCKETS
        )

    def load(self, policy: str, running: int, waiting: int) -> None:
        """A policy's rows decoding and requests waiting."""
        self.running.labels(policy).set(running)
        self.waiting.labels(policy).set(waiting)
        if self.vllm_load is not None:
            self.vllm_load[0].labels(policy).set(running)
            self.vllm_load[1].labels(policy).set(waiting)

    def step(self, policy: str, rule: str, drafted: int, accepted: int, deferred: int, emitted: int) -> None:
        """One row's share of an engine step."""
        if drafted:
            self.num_drafts.labels(policy).inc()
            self.num_draft_tokens.labels(policy).inc(drafted)
            self.num_accepted_tokens.labels(policy).inc(accepted)
            for i in range(accepted):
                self.accepted_per_pos.labels(policy, str(i)).inc()
        if deferred:
            self.deferred.labels(policy, rule).inc(deferred)
        self.generation_tokens.labels(policy).inc(emitted)

    def finished(
        self, policy: str, generation: Any, arrival: float, admitted: float, first: float | None, last: float
    ) -> None:
        """A finished request: its reason, latencies (perf_counter seconds) and acceptance."""
        m = generation.metrics
        self.success.labels(policy, generation.finish_reason).inc()
        self.queue.labels(policy).observe(max(0.0, admitted - arrival))
        self.e2e.labels(policy).observe(max(0.0, last - arrival))
        if first is not None:
            self.ttft.labels(policy).observe(max(0.0, first - arrival))
            n = len(generation.token_ids)
            if n > 1:
                self.tpot.labels(policy).observe(max(0.0, last - first) / (n - 1))
        if m.num_draft_tokens:
            self.acceptance.labels(policy).observe(m.num_accepted_tokens / m.num_draft_tokens)

    def text(self) -> bytes:
        return generate_latest(self.registry)
