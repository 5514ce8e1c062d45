"""cascade.serve.metrics without a server: the load gauges, and vLLM's names for routers that read them."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families

from cascade.serve.metrics import ServeMetrics


def _gauges(m: ServeMetrics) -> dict[tuple[str, str], float]:
    return {
        (s.name, next(iter(s.labels.values()))): s.value
        for f in text_string_to_metric_families(m.text().decode())
        if f.type == "gauge"
        for s in f.samples
    }


def test_load_gauges_under_cascades_names_and_optionally_vllms():
    plain = ServeMetrics()
    plain.load("spec", 3, 1)
    assert _gauges(plain) == {("cascade:num_requests_running", "spec"): 3, ("cascade:num_requests_waiting", "spec"): 1}
    both = ServeMetrics(vllm_names=True)
    both.load("spec", 5, 2)
    both.load("spec", 4, 0)
    assert _gauges(both) == {
        ("cascade:num_requests_running", "spec"): 4,
        ("cascade:num_requests_waiting", "spec"): 0,
        ("vllm:num_requests_running", "spec"): 4,
        ("vllm:num_requests_waiting", "spec"): 0,
    }
