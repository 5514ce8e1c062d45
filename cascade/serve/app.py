"""The HTTP app of `cascade serve` (FastAPI): OpenAI's completions and chat API over loaded policies.

    POST /v1/completions, /v1/chat/completions    streaming (SSE, a chunk per engine step, `data: [DONE]`) or not
    GET  /v1/models                               one entry per loaded policy
    GET  /health                                  200, or 503 once an engine loop has died
    GET  /metrics                                 Prometheus (cascade.serve.metrics)
    GET  /version                                 cascade's version

`model` names a policy, optionally with α (`cascade-token-v3@0.4`), or set α with
`extra_body={"cascade": {"alpha": 0.4}}`. Each request decodes as its own row: its temperature, top_p,
top_k, seed, stop strings and max_tokens are its own. The response's `usage` and `metrics` (the final
stream chunk's when `stream_options.include_usage`) carry the request's decoding figures.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from prometheus_client import CONTENT_TYPE_LATEST

from cascade.errors import CascadeError, PolicyError, RequestError
from cascade.serve import protocol as P
from cascade.serve.loop import EngineLoop, Ticket
from cascade.verify.sampling import SamplingParams

# Engine.request_row's fields as the request names them
REQUEST_FIELDS = {
    "max_new_tokens": "max_tokens",
    "params": "temperature",
    "rule": "cascade.rule",
    "speculate": "cascade.speculate",
}
FINISH = {"eos": "stop", "stop": "stop", "length": "length", "context": "length", "abort": "abort"}


@dataclass
class Served:
    """A loaded policy: its engine and the loop that drives it."""

    name: str
    engine: Any
    loop: EngineLoop
    registry: Any  # the plugin registry the policy was checked against (rules at other α)
    rules: dict[tuple[str, float], Any] = field(default_factory=dict)

    def rule_at(self, name: str, alpha: float) -> Any:
        """Rule `name` at α, built by its plugin as the policy would with it (checked: the rule's α range, what
        it reads from this drafter; a 400 naming the field otherwise)."""
        from cascade.decode.build import build_rule
        from cascade.policy import check_policy

        if (name, alpha) not in self.rules:
            own = self.engine.policy.rule
            options = dict(own.options) if name == own.name else {}
            policy = self.engine.policy.derive(
                self.name, {"rule": {"name": name, "alpha": alpha, "options": options}}, drop=()
            )
            try:
                check_policy(policy, self.registry)
                self.rules[(name, alpha)] = build_rule(policy, self.registry)
            except (PolicyError, CascadeError) as exc:
                message = str(exc).split("\n")[-1].strip()
                raise P.APIError(400, message, param="alpha" if "`rule.alpha`" in message else "cascade.rule") from None
        return self.rules[(name, alpha)]


def build_app(served: dict[str, Served], metrics: Any, version: str) -> FastAPI:
    app = FastAPI(title="cascade", version=version)

    @app.exception_handler(P.APIError)
    async def api_error(_: Request, exc: P.APIError) -> JSONResponse:
        headers = {"Retry-After": "1"} if exc.status in (429, 503) else None
        return JSONResponse(exc.body(), status_code=exc.status, headers=headers)

    @app.get("/health")
    async def health() -> Response:
        dead = [s.name for s in served.values() if not s.loop.alive]
        if dead:
            return JSONResponse({"status": "error", "dead": dead}, status_code=503)
        return JSONResponse({"status": "ok"})

    @app.get("/version")
    async def version_() -> dict[str, str]:
        return {"version": version}

    @app.get("/metrics")
    async def metrics_() -> Response:
        return Response(metrics.text(), media_type=CONTENT_TYPE_LATEST)

    @app.get("/v1/models")
    async def models() -> dict[str, Any]:
        return {
            "object": "list",
            "data": [
                {
                    "id": s.name,
                    "object": "model",
                    "created": P.created(),
                    "owned_by": "cascade",
                    "root": s.engine.policy.target.model,
                    "max_model_len": s.engine.target.max_positions,
                }
                for s in served.values()
            ],
        }

    @app.post("/v1/completions")
    async def completions(request: Request) -> Response:
        req = P.parse(P.CompletionRequest, await _json(request))
        s, alpha, rule = _resolve(served, req)
        prompt = (
            req.prompt[0]
            if isinstance(req.prompt, list) and req.prompt and isinstance(req.prompt[0], str)
            else req.prompt
        )
        if isinstance(prompt, list) and not prompt:
            raise P.APIError(400, "prompt is empty", param="prompt")
        text = prompt if isinstance(prompt, str) else s.engine.tokenizer.decode(prompt)
        return await _respond(request, s, req, alpha, rule, prompt, text, chat=False)

    @app.post("/v1/chat/completions")
    async def chat(request: Request) -> Response:
        req = P.parse(P.ChatRequest, await _json(request))
        s, alpha, rule = _resolve(served, req)
        tokenizer = s.engine.tokenizer
        if not getattr(tokenizer, "chat_template", None):
            raise P.APIError(
                400,
                f"model {s.name!r} has no chat template (its tokenizer defines none): use /v1/completions",
                param="messages",
            )
        messages = [{"role": m.role, "content": m.text()} for m in req.messages]
        try:
            ids = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True)
        except Exception as exc:  # a template that rejects the conversation (roles out of order, ...)
            raise P.APIError(400, f"the chat template refused these messages: {exc}", param="messages") from None
        ids = list(ids["input_ids"] if isinstance(ids, Mapping) else ids)  # a BatchEncoding in transformers 5
        return await _respond(request, s, req, alpha, rule, ids, tokenizer.decode(ids), chat=True)

    return app


async def _json(request: Request) -> Any:
    try:
        return await request.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise P.APIError(400, "the request body is not valid JSON") from None


def _resolve(served: dict[str, Served], req: Any) -> tuple[Served, float, str]:
    name, alpha = P.split_model(req.model)
    if name not in served:
        raise P.APIError(
            404,
            f"model {req.model!r} does not exist; loaded: {', '.join(sorted(served))}",
            param="model",
            kind="not_found_error",
        )
    s = served[name]
    if req.cascade is not None and req.cascade.alpha is not None:
        if alpha is not None and alpha != req.cascade.alpha:
            raise P.APIError(400, "α given twice (model@alpha and cascade.alpha) with different values", param="alpha")
        alpha = req.cascade.alpha
    rule = req.cascade.rule if req.cascade is not None and req.cascade.rule else s.engine.rule.name
    return s, s.engine.rule.alpha if alpha is None else alpha, rule


def _params(s: Served, req: Any) -> SamplingParams | None:
    """The request's sampling, where it sets any (None: the policy's)."""
    if req.temperature is None and req.top_p is None and req.top_k is None:
        return None
    base = s.engine.params
    top_k = base.top_k if req.top_k is None else max(req.top_k, 0)
    return SamplingParams(
        base.temperature if req.temperature is None else req.temperature,
        top_k,
        base.top_p if req.top_p is None else req.top_p,
    )


async def _respond(
    request: Request, s: Served, req: Any, alpha: float, rule_name: str, prompt: Any, prompt_text: str, chat: bool
) -> Response:
    own = s.engine.rule
    rule = None if (rule_name, alpha) == (own.name, own.alpha) else s.rule_at(rule_name, alpha)
    speculate = req.cascade is None or req.cascade.speculate
    index = s.loop.next_id()
    try:
        row = s.engine.request_row(
            index,
            prompt,
            req.limit(),
            req.seed,
            record_decisions=s.loop.logbook is not None,
            params=_params(s, req),
            rule=rule,
            stop=req.stops(),
            speculate=speculate,
        )
    except RequestError as exc:
        raise P.APIError(400, str(exc), param=REQUEST_FIELDS.get(exc.field, exc.field)) from None
    ticket = Ticket(index, row, prompt_text, alpha, asyncio.get_running_loop(), rule=rule_name)
    s.loop.submit(ticket)
    rid = P.new_id("chatcmpl" if chat else "cmpl")
    if req.stream:
        include = req.stream_options is not None and req.stream_options.include_usage
        return StreamingResponse(
            _sse(request, s, ticket, rid, req.model, chat, include), media_type="text/event-stream"
        )
    return JSONResponse(await _whole(request, s, ticket, rid, req.model, chat))


async def _next(request: Request, s: Served, ticket: Ticket) -> tuple:
    """The ticket's next event; a client that went away cancels it."""
    while True:
        try:
            return await asyncio.wait_for(ticket.events.get(), timeout=1.0)
        except asyncio.TimeoutError:
            if await request.is_disconnected():
                s.loop.cancel(ticket)
                raise asyncio.CancelledError from None


async def _whole(request: Request, s: Served, ticket: Ticket, rid: str, model: str, chat: bool) -> dict[str, Any]:
    while True:
        event = await _next(request, s, ticket)
        if event[0] == "error":
            raise event[1]
        if event[0] == "done":
            g = event[1]
            break
    choice: dict[str, Any] = {"index": 0, "finish_reason": FINISH.get(g.finish_reason, g.finish_reason)}
    if chat:
        choice["message"] = {"role": "assistant", "content": g.text}
    else:
        choice.update(text=g.text, logprobs=None)
    return {
        "id": rid,
        "object": "chat.completion" if chat else "text_completion",
        "created": P.created(),
        "model": model,
        "choices": [choice],
        "usage": P.usage(g.prompt_tokens, len(g.token_ids)),
        "metrics": P.figures(g, ticket.rule, ticket.alpha),
    }


async def _sse(
    request: Request, s: Served, ticket: Ticket, rid: str, model: str, chat: bool, include_usage: bool
) -> AsyncIterator[str]:
    kind = "chat.completion.chunk" if chat else "text_completion"
    created = P.created()

    def chunk(delta: str | None, finish: str | None, first: bool = False) -> str:
        if chat:
            d: dict[str, Any] = {"role": "assistant", "content": delta or ""} if first else {}
            if delta and not first:
                d["content"] = delta
            choice: dict[str, Any] = {"index": 0, "delta": d, "finish_reason": finish}
        else:
            choice = {"index": 0, "text": delta or "", "logprobs": None, "finish_reason": finish}
        body = {"id": rid, "object": kind, "created": created, "model": model, "choices": [choice]}
        return f"data: {json.dumps(body)}\n\n"

    finished = False
    try:
        if chat:
            yield chunk(None, None, first=True)
        while True:
            event = await _next(request, s, ticket)
            if event[0] == "text":
                yield chunk(event[1], None)
            elif event[0] == "error":
                yield f"data: {json.dumps(event[1].body())}\n\n"
                break
            else:
                g = event[1]
                yield chunk(None, FINISH.get(g.finish_reason, g.finish_reason))
                if include_usage:
                    body = {
                        "id": rid,
                        "object": kind,
                        "created": created,
                        "model": model,
                        "choices": [],
                        "usage": P.usage(g.prompt_tokens, len(g.token_ids)),
                        "metrics": P.figures(g, ticket.rule, ticket.alpha),
                    }
                    yield f"data: {json.dumps(body)}\n\n"
                break
        finished = True
        yield "data: [DONE]\n\n"
    finally:
        if not finished:  # the client went away mid-stream (the server cancelled this generator)
            s.loop.cancel(ticket)
