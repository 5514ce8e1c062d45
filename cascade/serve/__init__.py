"""`cascade serve`: policies behind an OpenAI-compatible HTTP API, with continuous batching and Prometheus metrics.

- `protocol`: the wire format (requests, responses, stream chunks, OpenAI's error object);
- `loop`: one policy's engine driven in its own thread; requests join its running batch as they arrive;
- `metrics`: vLLM's metric names under `cascade:`; `logbook`: the decision log, off the serving path;
- `app`: the FastAPI routes; `server`: the composition root (and a loopback server for tests and benchmarks);
- `cli`: the `cascade serve` command.
"""
