"""`cascade serve`'s metrics under Ray Serve: the same figures, exported by Ray's metrics agent.

`RayServeMetrics` is `ServeMetrics` with its three metric classes swapped for adapters over `ray.serve.metrics`
(the seam `ServeMetrics` keeps for this). Each replica records into Ray's metrics, which tag every series with
the deployment, replica and application; each node's metrics agent exports them at its metrics-export port.
Ray drops the colon of a name, so the names change, side by side (docs/ray-serve.md):

    cascade serve                                  cascade serve --ray (Ray's exporter adds `ray_`)
    cascade:spec_decode_num_draft_tokens_total     ray_cascade_spec_decode_num_draft_tokens_total
    cascade:num_requests_running                   ray_cascade_num_requests_running
    cascade:time_to_first_token_seconds_bucket     ray_cascade_time_to_first_token_seconds_bucket

The app's `/metrics` reaches one replica, whichever Ray's proxy picks; under Ray it answers with the cascade
series of every node's exporter (`cluster_text`), so a scrape of it is the cluster's view whichever replica
answers. Scraping the exporters directly is the usual Prometheus set-up for a cluster.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from cascade.serve.metrics import PREFIX, ServeMetrics

RAY_PREFIX = "cascade_"  # Ray strips ':' from names; this is what is registered (the exporter adds "ray_")
EXPORTED = ("ray_" + RAY_PREFIX, RAY_PREFIX)  # the families /metrics passes on


def _name(name: str) -> str:
    return RAY_PREFIX + name.removeprefix(PREFIX)


class _Child:
    """A labelled series: the prometheus_client calls ServeMetrics makes (`inc`, `set`, `observe`)."""

    def __init__(self, metric: Any, tags: dict[str, str]):
        self.metric, self.tags = metric, tags

    def inc(self, amount: float = 1.0) -> None:
        if amount:
            self.metric.inc(amount, tags=self.tags)

    def set(self, value: float) -> None:
        self.metric.set(value, tags=self.tags)

    def observe(self, value: float) -> None:
        self.metric.observe(value, tags=self.tags)


class _Metric:
    kind = ""

    def __init__(
        self,
        name: str,
        documentation: str,
        labelnames: Sequence[str],
        registry: Any = None,
        buckets: Sequence[float] | None = None,
    ):
        from ray.serve import metrics

        self.keys = tuple(labelnames)
        kwargs: dict[str, Any] = {"description": documentation, "tag_keys": self.keys}
        if buckets is not None:  # Ray wants positive boundaries: a bucket at 0 becomes one at 1e-9
            kwargs["boundaries"] = [b if b > 0 else 1e-9 for b in buckets]
        self.metric = getattr(metrics, self.kind)(_name(name), **kwargs)

    def labels(self, *values: str) -> _Child:
        return _Child(self.metric, dict(zip(self.keys, (str(v) for v in values))))


class _Counter(_Metric):
    kind = "Counter"


class _Gauge(_Metric):
    kind = "Gauge"


class _Histogram(_Metric):
    kind = "Histogram"


def cluster_text(timeout: float = 5.0) -> bytes:
    """The cascade series of every alive node's metrics exporter, as one Prometheus text page."""
    import httpx
    import ray

    out: list[str] = []
    for node in ray.nodes():
        if not node.get("Alive") or not node.get("MetricsExportPort"):
            continue
        url = f"http://{node['NodeManagerAddress']}:{node['MetricsExportPort']}/metrics"
        try:
            text = httpx.get(url, timeout=timeout).text
        except httpx.HTTPError as exc:
            out.append(f"# node {node['NodeManagerAddress']}: its exporter did not answer ({exc})")
            continue
        for line in text.splitlines():
            name = line.split(" ", 3)[2] if line.startswith("# ") and line.count(" ") >= 2 else line
            if name.startswith(EXPORTED):
                out.append(line)
    return ("\n".join(out) + "\n").encode()


class RayServeMetrics(ServeMetrics):
    """ServeMetrics recorded into Ray's metrics (one replica's share; Ray aggregates the cluster's)."""

    counter_cls = _Counter
    gauge_cls = _Gauge
    histogram_cls = _Histogram

    def text(self) -> bytes:
        return cluster_text()
