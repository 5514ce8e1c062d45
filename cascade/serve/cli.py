"""`cascade serve POLICY [POLICY ...]`: an OpenAI-compatible server over the policies (cascade.serve).

cascade serve policies/speculative-ngram.yaml policies/cascade-token-v3.yaml --port 8000
curl localhost:8000/v1/completions -d '{"model": "speculative-ngram", "prompt": "def add(", "max_tokens": 32}'
"""

from __future__ import annotations

import argparse
from pathlib import Path


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("serve", help="serve policies over an OpenAI-compatible HTTP API")
    p.add_argument("policies", nargs="+", type=Path, help="YAML policy files: each is a model named by its policy name")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=8000, help="port to listen on (default 8000)")
    p.add_argument(
        "--max-num-seqs", type=int, default=8, help="rows a policy decodes at once; requests beyond wait (default 8)"
    )
    p.add_argument(
        "--max-waiting", type=int, default=64, help="requests a policy lets wait before answering 503 (default 64)"
    )
    p.add_argument("--store", metavar="URL", help="log served requests to this store (default: as `cascade run`)")
    p.add_argument("--no-store", action="store_true", help="keep no decision log of served requests")
    p.add_argument(
        "--vllm-metric-names",
        action="store_true",
        help="also export the running/waiting gauges as vllm:num_requests_running/_waiting for routers "
        "(one server; under --ray, Ray drops the colons)",
    )
    r = p.add_argument_group("Ray Serve (scale-out: N replicas behind Ray's proxy; docs/ray-serve.md)")
    r.add_argument("--ray", action="store_true", help="serve as a Ray Serve deployment (needs `ray[serve]`)")
    r.add_argument("--replicas", type=int, help="replicas, each holding its own engines (default 1)")
    r.add_argument("--autoscale", metavar="MIN,MAX", help="autoscale between MIN and MAX replicas")
    r.add_argument("--num-cpus", type=float, help="Ray CPUs per replica (default 1)")
    r.add_argument("--num-gpus", type=float, help="GPUs per replica (default 0)")
    r.add_argument(
        "--max-ongoing-requests", type=int, help="requests a replica takes at once (default max-num-seqs + max-waiting)"
    )
    r.add_argument(
        "--session-affinity",
        action="store_true",
        default=None,
        help="route requests with the same x-session-id header to the same replica (default: by load)",
    )
    r.add_argument("--ray-address", help="join this Ray cluster (e.g. auto); default: start a local one")
    r.add_argument("--ray-config", type=Path, help="a YAML file whose `serve:` section holds these options")
    r.add_argument(
        "--print-config", action="store_true", help="print the equivalent Ray Serve config file (`serve run`) and exit"
    )
    p.set_defaults(func=cmd_serve)


def ray_options(args: argparse.Namespace):
    """The Ray Serve options of the flags (on top of --ray-config's `serve:` section)."""
    from cascade.errors import CascadeError
    from cascade.serve.ray_serve import load_options

    autoscale = None
    if args.autoscale:
        try:
            low, high = (int(v) for v in args.autoscale.split(","))
        except ValueError:
            raise CascadeError(f"--autoscale {args.autoscale!r}: expected MIN,MAX (two integers)") from None
        autoscale = (low, high)
    flags = {
        "replicas": args.replicas,
        "autoscale": autoscale,
        "num_cpus": args.num_cpus,
        "num_gpus": args.num_gpus,
        "max_ongoing_requests": args.max_ongoing_requests,
        "address": args.ray_address,
        "session_affinity": args.session_affinity,
    }
    return load_options(args.ray_config, flags)


def cmd_serve(args: argparse.Namespace) -> int:
    from cascade.policy import load_policy
    from cascade.serve.server import Server
    from cascade.store import resolve_url

    first = load_policy(args.policies[0])  # a bad file fails before any model loads
    url = resolve_url(args.store, no_store=args.no_store, policy=first)
    if args.ray or args.print_config:
        return serve_on_ray(args, url)
    server = Server.load(
        args.policies,
        max_num_seqs=args.max_num_seqs,
        max_waiting=args.max_waiting,
        store=url,
        vllm_names=args.vllm_metric_names,
    )
    print(f"serving {', '.join(server.served)} on http://{args.host}:{args.port}/v1", flush=True)
    server.serve(args.host, args.port)
    return 0


def serve_on_ray(args: argparse.Namespace, url: str | None) -> int:
    import yaml

    from cascade.errors import CascadeError
    from cascade.serve import ray_serve

    options = ray_options(args)
    ray_serve.check_store(url, options)
    where = {"host": args.host, "port": args.port, "max_num_seqs": args.max_num_seqs, "max_waiting": args.max_waiting}
    if args.print_config:
        print(yaml.safe_dump(ray_serve.config_file(args.policies, options, store=url, **where), sort_keys=False))
        return 0
    try:
        import ray.serve  # noqa: F401
    except ImportError:
        raise CascadeError("--ray needs Ray Serve: pip install 'cascade[ray]' (or 'ray[serve]')") from None
    ray_serve.serve_forever(args.policies, options, store=url, **where)
    return 0
