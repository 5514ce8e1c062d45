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
    p.set_defaults(func=cmd_serve)


def cmd_serve(args: argparse.Namespace) -> int:
    from cascade.policy import load_policy
    from cascade.serve.server import Server
    from cascade.store import resolve_url

    first = load_policy(args.policies[0])  # a bad file fails before any model loads
    url = resolve_url(args.store, no_store=args.no_store, policy=first)
    server = Server.load(args.policies, max_num_seqs=args.max_num_seqs, max_waiting=args.max_waiting, store=url)
    print(f"serving {', '.join(server.served)} on http://{args.host}:{args.port}/v1", flush=True)
    server.serve(args.host, args.port)
    return 0
