"""The OpenAI-compatible wire format `cascade serve` speaks: requests, responses, stream chunks and errors.

Requests are validated with pydantic (unknown fields pass, as OpenAI's own server ignores what it does not
know, but `n` > 1, `best_of`, `logprobs`, `echo`, `suffix` and tools are refused by name). Errors are
OpenAI's error object, `{"error": {"message", "type", "param", "code"}}`, with `code` the HTTP status as
vLLM sends it. A model name is a loaded policy's, optionally with α: `cascade-token-v3@0.4`.
"""

from __future__ import annotations

import time
import uuid
from typing import Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError


class APIError(Exception):
    """An error a client gets as OpenAI's error object with this HTTP status."""

    def __init__(self, status: int, message: str, param: str | None = None, kind: str | None = None):
        super().__init__(message)
        self.status, self.message, self.param = status, message, param
        self.kind = kind or {
            400: "invalid_request_error",
            404: "not_found_error",
            429: "rate_limit_error",
            503: "service_unavailable",
        }.get(status, "internal_error")

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.kind, "param": self.param, "code": self.status}}


class StreamOptions(BaseModel):
    include_usage: bool = False


class CascadeOptions(BaseModel):
    """`extra_body={"cascade": {...}}`: what a request may set per row."""

    model_config = ConfigDict(extra="forbid")

    alpha: float | None = None  # the rule at another α
    rule: str | None = None  # another rule in this row (one the policy's verification serves: cascade for cascade)
    speculate: bool = True  # False: the target's tokens alone (a lossless policy with a schedule of its own)


class _Request(BaseModel):
    model_config = ConfigDict(extra="allow")

    model: str
    max_tokens: int | None = Field(None, ge=1)
    max_completion_tokens: int | None = Field(None, ge=1)  # the chat API's newer name
    temperature: float | None = Field(None, ge=0.0, le=2.0)
    top_p: float | None = Field(None, gt=0.0, le=1.0)
    top_k: int | None = Field(None, ge=-1)  # vLLM's extension; -1 or 0 = off
    seed: int | None = None
    stop: str | list[str] | None = None
    n: int = 1
    stream: bool = False
    stream_options: StreamOptions | None = None
    user: str | None = None
    cascade: CascadeOptions | None = None

    def stops(self) -> list[str] | None:
        return [self.stop] if isinstance(self.stop, str) else self.stop

    def limit(self) -> int | None:
        return self.max_completion_tokens or self.max_tokens


REFUSED = {  # fields cascade does not implement: a 400 naming them rather than a silent ignore
    "best_of": "best_of is not supported",
    "logprobs": "logprobs are not supported",
    "top_logprobs": "logprobs are not supported",
    "echo": "echo is not supported",
    "suffix": "suffix is not supported",
    "tools": "tools are not supported",
    "functions": "functions are not supported",
    "logit_bias": "logit_bias is not supported",
}


class CompletionRequest(_Request):
    prompt: str | list[int] | list[str]


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="allow")

    role: Literal["system", "user", "assistant", "developer", "tool"]
    content: str | list[dict[str, Any]] | None = None

    def text(self) -> str:
        if isinstance(self.content, list):  # [{"type": "text", "text": ...}, ...]
            return "".join(str(part.get("text", "")) for part in self.content if part.get("type") == "text")
        return self.content or ""


class ChatRequest(_Request):
    messages: list[ChatMessage] = Field(min_length=1)


R = TypeVar("R", bound=_Request)


def parse(cls: type[R], data: Any) -> R:
    """A request, or an APIError(400) naming the first bad field."""
    if not isinstance(data, dict):
        raise APIError(400, "the request body must be a JSON object")
    try:
        req = cls.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        field = ".".join(str(p) for p in err["loc"]) or None
        raise APIError(400, f"{field}: {err['msg']}" if field else err["msg"], param=field) from None
    for name, why in REFUSED.items():
        if data.get(name) not in (None, False, 0, [], {}):
            raise APIError(400, why, param=name)
    if req.n != 1:
        raise APIError(400, f"n must be 1 (cascade returns one choice per request), got {req.n}", param="n")
    if (
        isinstance(req, CompletionRequest)
        and isinstance(req.prompt, list)
        and req.prompt
        and isinstance(req.prompt[0], str)
    ):
        if len(req.prompt) != 1:
            raise APIError(400, "one prompt per request (send several requests)", param="prompt")
    return req


def split_model(name: str) -> tuple[str, float | None]:
    """`policy@alpha` -> (policy, α); a plain name -> (name, None)."""
    if "@" not in name:
        return name, None
    policy, _, alpha = name.rpartition("@")
    try:
        return policy, float(alpha)
    except ValueError:
        raise APIError(400, f"model {name!r}: the part after '@' must be a number (α)", param="model") from None


def new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:24]}"


def usage(prompt_tokens: int, completion_tokens: int) -> dict[str, int]:
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }


def figures(generation: Any, rule: str, alpha: float) -> dict[str, Any]:
    """Per-request decoding figures: vLLM's `speculative_decoding` summary and cascade's deferral."""
    m = generation.metrics
    drafted, accepted = m.num_draft_tokens, m.num_accepted_tokens
    steps = sum(1 for s in generation.steps if s.drafted)  # vLLM's drafts: steps that verified a draft
    return {
        "speculative_decoding": {
            "num_spec_steps": steps,
            "num_draft_tokens": drafted,
            "num_accepted_draft_tokens": accepted,
            "draft_acceptance_rate": accepted / drafted if drafted else None,
            "mean_acceptance_length": 1 + accepted / steps if steps else None,
            "accepted_per_position": list(m.accepted_per_position),
        },  # the Prometheus counters add these up (cascade.serve.metrics)
        "cascade": {
            "rule": rule,
            "alpha": alpha,
            "deferred_tokens": m.num_deferred,
            "target_calls": m.target_calls,
            "drafter_calls": m.drafter_calls,
        },
    }


def created() -> int:
    return int(time.time())
