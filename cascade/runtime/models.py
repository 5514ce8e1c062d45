"""Load any Hugging Face causal LM (local folder or hub id): paths, devices, dtypes.

The engine runs a loaded model through `cascade.runtime.ragged.RaggedLM` (its KV cache over a
batch of rows).
"""

from __future__ import annotations

import re
from pathlib import Path

import torch

from cascade.errors import CascadeError

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def resolve_device(spec: str = "auto") -> torch.device:
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(spec)
    except RuntimeError as exc:
        raise CascadeError(f"unknown device {spec!r}: use auto, cpu, cuda or cuda:N") from exc
    if device.type == "cuda" and not torch.cuda.is_available():
        raise CascadeError(f"device {spec!r} asked for, but torch sees no CUDA device; use device: auto or cpu")
    return device


def resolve_dtype(spec: str, device: torch.device) -> torch.dtype:
    if spec == "auto":
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    return DTYPES[spec]


HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*(/[A-Za-z0-9][\w.-]*)?")  # "name" or "org/name"


def resolve_model_path(spec: str, base_dir: Path | None = None) -> str:
    """A folder relative to the policy file wins, then the working directory; else a hub id. A spec that is
    neither (no such folder, and not of a hub id's form) is refused, naming the folders looked at."""
    bases = ([base_dir] if base_dir else []) + [Path.cwd()]
    for base in bases:
        candidate = (base / spec).resolve()
        if candidate.is_dir():
            return str(candidate)
    if not HUB_ID.fullmatch(spec) or ".." in spec:
        tried = " or ".join(dict.fromkeys(str((b / spec).resolve()) for b in bases))
        origin = "the policy's folder, then the working directory" if base_dir else "the working directory"
        raise CascadeError(f"no model folder at {tried} (resolved from {origin}), and {spec!r} is not a hub id")
    return spec


def load_tokenizer(
    path: str, trust_remote_code: bool = False, revision: str | None = None, gguf_file: str | None = None
):
    """The tokenizer of the model at `path`; with `gguf_file`, the one that GGUF file in `path` carries."""
    from transformers import AutoTokenizer

    extra = {"gguf_file": gguf_file} if gguf_file else {}
    try:
        return AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code, revision=revision, **extra)
    except CascadeError:
        raise
    except Exception as exc:
        raise CascadeError(f"could not load the tokenizer of {path!r}: {_short(exc)}") from exc


def load_model(
    path: str,
    dtype: torch.dtype = torch.float32,
    device: torch.device | None = None,
    trust_remote_code: bool = False,
    revision: str | None = None,
    gguf_file: str | None = None,
):
    """The causal LM at `path` (a local folder or a hub id) in eval mode on `device`; with `gguf_file`, the
    GGUF checkpoint of that name in `path`, de-quantized to `dtype` (`cascade.runtime.gguf`)."""
    from transformers import AutoModelForCausalLM
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    try:
        if gguf_file:
            from cascade.runtime.gguf import load_gguf_model

            model = load_gguf_model(path, gguf_file, dtype, revision)
        else:
            model = AutoModelForCausalLM.from_pretrained(
                path, dtype=dtype, trust_remote_code=trust_remote_code, revision=revision
            )
    except CascadeError:
        raise
    except Exception as exc:
        raise CascadeError(
            f"could not load model {path!r}: {_short(exc)} "
            "(give a local folder with config.json and weights, or a hub id reachable from this machine)"
        ) from exc
    return model.to(device or torch.device("cpu")).eval()


def _short(exc: Exception) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"


def max_positions(config) -> int | None:
    for attr in ("max_position_embeddings", "n_positions", "max_sequence_length", "seq_length"):
        value = getattr(config, attr, None)
        if isinstance(value, int) and value > 0:
            return value
    return None


def sync(device: torch.device) -> None:
    """Wait for the device's queued work (CUDA), so a wall-clock reading covers it; a no-op on the CPU."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
