"""`cascade serve --ray`: the same OpenAI server as N replicas of one Ray Serve deployment.

    cascade serve policies/speculative-ngram.yaml --ray --replicas 2 --store postgresql://u@host/cascade
    cascade serve POLICY --ray --autoscale 1,4 --num-cpus 2 --ray-address auto      # join a running cluster
    cascade serve POLICY --ray --ray-config serve.yaml                              # its `serve:` section

Each replica is a Ray actor that loads the policies (`Server.load`: engines, their loops, the decision log)
and answers through the very FastAPI app of `cascade serve`: the ingress is late-bound
(`serve.ingress()` with `__serve_build_asgi_app__`), so the app is built in the replica, after its engines.
Ray's proxy spreads requests over the replicas (power of two choices on their ongoing requests), restarts a
replica whose process dies or whose health check fails (an engine loop died), and scales between
`--autoscale MIN,MAX` on ongoing requests per replica. With `--session-affinity` requests are routed by their
`x-session-id` header instead (Ray's consistent-hash router: one conversation, one replica, falling back to
the next replica on the ring when that one is full; requests without the header spread uniformly).

- `max_ongoing_requests` (per replica) defaults to max-num-seqs + max-waiting: Ray's default of 5 would cap
  a running batch below max-num-seqs, so a smaller value is refused.
- Every replica logs to the one store at `--store`, each run tagged with the deployment and the replica
  (`runs.info`); SQLite is refused for more than one replica (several processes writing one file).
- Metrics go through Ray's metrics agent (cascade.serve.ray_metrics), and `/metrics` answers with the
  cluster's series whichever replica it reaches.
- Every response carries `x-cascade-replica`, the replica that decoded it.

`RayServeOptions` is also the `serve:` section of a YAML file (`--ray-config`); flags given on the command
line win. `cascade serve --ray --print-config` writes the equivalent Ray Serve config file for `serve run`.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from cascade.errors import CascadeError

REPLICA_HEADER = "x-cascade-replica"
AFFINITY_ROUTER = "ray.serve.experimental.consistent_hash_router.ConsistentHashRouter"


class RayServeOptions(BaseModel):
    """How the deployment runs (flags, or a YAML file's `serve:` section)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = "cascade"  # the Serve application and deployment: the `deployment` tag of every logged run
    replicas: int = Field(1, ge=1)  # a fixed number of replicas (ignored with autoscale)
    autoscale: tuple[int, int] | None = None  # (min, max) replicas, scaled on ongoing requests per replica
    target_ongoing_requests: float | None = Field(None, gt=0)  # autoscaling's target (default: max-num-seqs)
    num_cpus: float = Field(1.0, ge=0)  # Ray's logical CPUs per replica
    num_gpus: float = Field(0.0, ge=0)  # GPUs per replica (fractions share one)
    max_ongoing_requests: int | None = Field(None, ge=1)  # per replica (default: max-num-seqs + max-waiting)
    max_queued_requests: int = -1  # requests Ray queues for a deployment before answering 503 (-1: no limit)
    address: str | None = None  # a Ray cluster to join ("auto", "ray://host:10001"); None: start a local one
    cluster_cpus: int | None = Field(None, ge=1)  # a local cluster's logical CPUs (default: this machine's)
    session_affinity: bool = False  # route by the `x-session-id` header (consistent hashing) instead of load

    @model_validator(mode="after")
    def _bounds(self) -> RayServeOptions:
        if self.autoscale is not None:
            low, high = self.autoscale
            if not 0 <= low <= high or high < 1:
                raise ValueError(f"autoscale must be MIN,MAX with 0 <= MIN <= MAX and MAX >= 1, got {self.autoscale}")
        return self

    @property
    def most_replicas(self) -> int:
        return self.autoscale[1] if self.autoscale is not None else self.replicas


def load_options(path: Path | None, overrides: dict[str, Any]) -> RayServeOptions:
    """A YAML file's `serve:` section (or none) with the flags that were given on top."""
    import yaml

    data: dict[str, Any] = {}
    if path is not None:
        try:
            loaded = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
        except (OSError, yaml.YAMLError) as exc:
            raise CascadeError(f"{path}: cannot read the Ray Serve options ({exc})") from None
        if not isinstance(loaded, dict) or not isinstance(loaded.get("serve", {}), dict):
            raise CascadeError(f"{path}: expected a mapping with a `serve:` section")
        data = dict(loaded.get("serve") or {})
    data.update({k: v for k, v in overrides.items() if v is not None})
    try:
        return RayServeOptions.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'serve'}: {e['msg']}" for e in exc.errors())
        raise CascadeError(f"{path or 'flags'}: bad Ray Serve options: {problems}") from None


def check_store(store: str | None, options: RayServeOptions) -> None:
    """Refuse a SQLite store that several replicas would write."""
    if store and store.startswith("sqlite") and options.most_replicas > 1:
        raise CascadeError(
            f"--store {store}: SQLite is one file that {options.most_replicas} replica processes would write at "
            "once; give a PostgreSQL URL (postgresql://...) that every replica reaches, or --no-store"
        )


class CascadeReplica:
    """One replica: the policies loaded into a `Server`, answering through its app."""

    def __init__(
        self, policies: Sequence[str], max_num_seqs: int, max_waiting: int, store: str | None, deployment: str
    ):
        from ray import serve

        from cascade.serve.ray_metrics import RayServeMetrics
        from cascade.serve.server import Server

        self.replica = serve.get_replica_context().replica_id.unique_id
        self.server = Server.load(
            policies,
            max_num_seqs=max_num_seqs,
            max_waiting=max_waiting,
            store=store,
            metrics=RayServeMetrics(),
            run_info={"deployment": deployment, "replica": self.replica},
        )

    def __serve_build_asgi_app__(self) -> Any:
        app = self.server.app
        replica = self.replica

        @app.middleware("http")
        async def tag(request: Any, call_next: Any) -> Any:
            response = await call_next(request)
            response.headers[REPLICA_HEADER] = replica
            return response

        return app

    def check_health(self) -> None:
        """Ray's periodic health check: a dead engine loop makes Ray replace the replica."""
        if not self.server.healthy:
            raise CascadeError(f"replica {self.replica}: an engine loop has died")

    def __del__(self) -> None:  # Ray's graceful shutdown: stop the loops, flush the decision log
        server = getattr(self, "server", None)
        if server is not None:
            server.close()


def application(
    policies: Sequence[str | Path], options: RayServeOptions, max_num_seqs: int, max_waiting: int, store: str | None
) -> Any:
    """The Ray Serve application: one deployment of `CascadeReplica`, bound to the policies."""
    from ray import serve

    ongoing = options.max_ongoing_requests or max_num_seqs + max_waiting
    if ongoing < max_num_seqs:
        raise CascadeError(
            f"max_ongoing_requests {ongoing} is below --max-num-seqs {max_num_seqs}: Ray would never let a "
            "replica's batch fill"
        )
    settings: dict[str, Any] = {
        "name": options.name,
        "ray_actor_options": {"num_cpus": options.num_cpus, "num_gpus": options.num_gpus},
        "max_ongoing_requests": ongoing,
        "max_queued_requests": options.max_queued_requests,
        "health_check_period_s": 5,
        "graceful_shutdown_timeout_s": 30,
    }
    if options.autoscale is not None:
        settings["autoscaling_config"] = {
            "min_replicas": options.autoscale[0],
            "max_replicas": options.autoscale[1],
            "initial_replicas": max(1, options.autoscale[0]),
            "target_ongoing_requests": options.target_ongoing_requests or max_num_seqs,
        }
    else:
        settings["num_replicas"] = options.replicas
    if options.session_affinity:  # one conversation, one replica (ready for a prefix cache); else power of two
        from ray.serve.config import RequestRouterConfig

        settings["request_router_config"] = RequestRouterConfig(request_router_class=AFFINITY_ROUTER)
    deployment = serve.deployment(**settings)(serve.ingress()(CascadeReplica))
    paths = [str(Path(p).resolve()) for p in policies]
    return deployment.bind(paths, max_num_seqs, max_waiting, store, options.name)


def start_ray(options: RayServeOptions, host: str, port: int) -> None:
    """Join the cluster at `options.address`, or start a local one; start Serve's proxy on host:port."""
    import ray
    from ray import serve

    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    if not ray.is_initialized():
        if options.address:
            ray.init(address=options.address, logging_level="WARNING")
        else:
            ray.init(
                num_cpus=options.cluster_cpus or os.cpu_count() or 1,
                include_dashboard=False,
                logging_level="WARNING",
                _system_config={"metrics_report_interval_ms": 2000},
            )
    serve.start(http_options={"host": host, "port": port})


def deploy(
    policies: Sequence[str | Path],
    options: RayServeOptions,
    *,
    host: str = "127.0.0.1",
    port: int = 8000,
    max_num_seqs: int = 8,
    max_waiting: int = 64,
    store: str | None = None,
) -> str:
    """Start (or join) Ray, deploy the replicas and wait until they serve; the base URL."""
    from ray import serve

    check_store(store, options)
    app = application(policies, options, max_num_seqs, max_waiting, store)
    start_ray(options, host, port)
    serve.run(app, name=options.name, route_prefix="/")
    return f"http://{host}:{port}"


def shutdown() -> None:
    import ray
    from ray import serve

    if ray.is_initialized():
        serve.shutdown()
        ray.shutdown()


def serve_forever(policies: Sequence[str | Path], options: RayServeOptions, **kwargs: Any) -> None:
    """`cascade serve --ray` in the foreground: deploy, then wait for Ctrl-C and shut Serve (and a local Ray) down."""
    url = deploy(policies, options, **kwargs)
    count = f"{options.autoscale[0]}-{options.autoscale[1]} (autoscaled)" if options.autoscale else options.replicas
    print(f"serving {len(policies)} policies on {url}/v1 through Ray Serve, {count} replicas", flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        shutdown()


def build(args: dict[str, Any]) -> Any:
    """The application builder a Ray Serve config file names (`import_path: cascade.serve.ray_serve:build`)."""
    options = RayServeOptions.model_validate(args.get("options") or {})
    store = args.get("store")
    check_store(store, options)
    seqs, waiting = int(args.get("max_num_seqs", 8)), int(args.get("max_waiting", 64))
    return application(args["policies"], options, seqs, waiting, store)


def config_file(
    policies: Sequence[str | Path],
    options: RayServeOptions,
    *,
    host: str,
    port: int,
    max_num_seqs: int,
    max_waiting: int,
    store: str | None,
) -> dict[str, Any]:
    """The equivalent Ray Serve config file: `serve run FILE` (or `serve deploy FILE` on a running cluster)."""
    return {
        "http_options": {"host": host, "port": port},
        "applications": [
            {
                "name": options.name,
                "route_prefix": "/",
                "import_path": "cascade.serve.ray_serve:build",
                "args": {
                    "policies": [str(Path(p).resolve()) for p in policies],
                    "max_num_seqs": max_num_seqs,
                    "max_waiting": max_waiting,
                    "store": store,
                    "options": options.model_dump(mode="json", exclude_none=True),
                },
            }
        ],
    }
