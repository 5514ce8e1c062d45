"""The composition root of `cascade serve`: engines, their loops, the decision log and the app, and uvicorn.

    server = Server.load(["policies/speculative-ngram.yaml"], max_num_seqs=8, store=None)
    url = server.serve_in_thread(port=0)         # tests and benchmarks: a loopback server on a free port
    ...
    server.close()

`cascade serve` runs `server.serve(host, port)` in the foreground. Servers bind to 127.0.0.1 unless told.
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from cascade.errors import CascadeError
from cascade.serve.app import Served, build_app
from cascade.serve.logbook import Logbook
from cascade.serve.loop import EngineLoop
from cascade.serve.metrics import ServeMetrics

log = logging.getLogger("cascade.serve")


def wait_until_serving(url: str, process: Any = None, timeout: float = 120.0) -> None:
    """Wait until the server at `url` answers /health with 200 (`process`: a `subprocess.Popen` running it, whose
    exit ends the wait); a CascadeError with the process's stderr otherwise."""
    import httpx

    deadline = time.monotonic() + timeout
    while True:
        try:
            if httpx.get(url + "/health", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        if (process is not None and process.poll() is not None) or time.monotonic() > deadline:
            err = process.stderr.read() if process is not None and process.stderr else ""
            raise CascadeError(f"no cascade server answered at {url}: {err}")
        time.sleep(0.3)


class Server:
    def __init__(self, served: dict[str, Served], metrics: ServeMetrics, logbooks: list[Logbook], store: Any = None):
        from cascade.cli import version_text

        self.served, self.metrics, self.logbooks, self.store = served, metrics, logbooks, store
        self.app = build_app(served, metrics, version_text().split(" (")[0].removeprefix("cascade "))
        self._uvicorn: Any = None
        self._thread: threading.Thread | None = None

    @classmethod
    def load(
        cls,
        policies: Sequence[str | Path],
        *,
        max_num_seqs: int = 8,
        max_waiting: int = 64,
        store: str | None = None,
        log_capacity: int = 1024,
        metrics: ServeMetrics | None = None,
        vllm_names: bool = False,
        run_info: Mapping[str, Any] | None = None,
    ) -> Server:
        """Load each policy's engine and start its loop; `store`: a store URL to log served requests to (None:
        no decision log); `metrics`: where the figures go (default: this process's Prometheus registry, with
        vLLM's names for the load gauges too when `vllm_names`); `run_info`: more of what each logged run
        records (a Ray replica's deployment and id)."""
        from cascade.decode.engine import Engine
        from cascade.plugins import registry
        from cascade.policy import load_policy
        from cascade.store import Store, engine_info

        if max_num_seqs < 1 or max_waiting < 1:
            raise CascadeError("--max-num-seqs and --max-waiting must be at least 1")
        reg = registry()
        metrics = metrics or ServeMetrics(vllm_names=vllm_names)
        opened = Store.open(store) if store else None
        served: dict[str, Served] = {}
        logbooks: list[Logbook] = []
        for path in policies:
            policy = load_policy(path)
            if policy.name in served:
                raise CascadeError(f"two policies are named {policy.name!r}: each model name must be unique")
            engine = Engine.from_policy(policy, reg)
            logbook = None
            if opened is not None:
                run = opened.start_run(policy, {**engine_info(engine), "source": "cascade serve", **(run_info or {})})
                logbook = Logbook(policy.name, run, metrics, log_capacity)
                logbooks.append(logbook)
            loop = EngineLoop(policy.name, engine, metrics, max_num_seqs, max_waiting, logbook)
            loop.start()
            served[policy.name] = Served(policy.name, engine, loop, reg)
        return cls(served, metrics, logbooks, opened)

    @property
    def healthy(self) -> bool:
        """Every policy's engine loop is alive."""
        return all(s.loop.alive for s in self.served.values())

    def serve(self, host: str = "127.0.0.1", port: int = 8000) -> None:
        """Serve in the foreground until interrupted, then close."""
        import uvicorn

        try:
            uvicorn.run(self.app, host=host, port=port, log_level="info")
        finally:
            self.close()

    def serve_in_thread(self, host: str = "127.0.0.1", port: int = 0, timeout: float = 30.0) -> str:
        """Serve from a background thread; the base URL (`port` 0: a free one)."""
        import uvicorn

        if port == 0:
            with socket.socket() as s:
                s.bind((host, 0))
                port = s.getsockname()[1]
        config = uvicorn.Config(self.app, host=host, port=port, log_level="warning")
        self._uvicorn = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._uvicorn.run, name="cascade-http", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self._uvicorn.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise CascadeError(f"the server did not start on {host}:{port}")
            time.sleep(0.02)
        return f"http://{host}:{port}"

    def close(self) -> None:
        if self._uvicorn is not None:
            self._uvicorn.should_exit = True
            if self._thread is not None:
                self._thread.join(10)
            self._uvicorn = None
        for s in self.served.values():
            s.loop.stop()
        for logbook in self.logbooks:
            logbook.close()
        self.logbooks = []
        if self.store is not None:
            self.store.close()
            self.store = None
