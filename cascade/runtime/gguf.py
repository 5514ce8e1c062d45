"""GGUF checkpoints (llama.cpp's format) as a first-class input, through transformers.

transformers de-quantizes a GGUF file into an ordinary PyTorch model of the matching
architecture (it needs the `gguf` package; `pip install cascade-llm[gguf]`). That takes
seconds per load, so `import_gguf` writes the result once as an ordinary Hugging Face
folder (config, safetensors, tokenizer); a model loaded from GGUF cannot be saved as it
is, so its weights are copied into a fresh model of the same config first.

Before anything is loaded, `inspect_gguf` reads the file's header and refuses, naming what
is supported, an architecture transformers cannot map or a tensor type `gguf` cannot
de-quantize.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import torch

from cascade.errors import CascadeError

PLAIN_TYPES = ("F32", "F16", "BF16")  # stored as floats: nothing to de-quantize


@dataclass(frozen=True)
class GGUFInfo:
    path: Path
    architecture: str  # general.architecture, e.g. "llama"
    tensor_types: dict[str, int]  # ggml tensor type -> how many tensors use it
    name: str | None = None  # general.name, when the file says


def _gguf():
    try:
        import gguf
    except ImportError as exc:
        raise CascadeError(
            "reading a GGUF file needs the `gguf` package: pip install 'cascade-llm[gguf]' (or pip install gguf)"
        ) from exc
    return gguf


def supported_architectures() -> list[str]:
    from transformers.modeling_gguf_pytorch_utils import GGUF_SUPPORTED_ARCHITECTURES

    return sorted(a for a in GGUF_SUPPORTED_ARCHITECTURES if a not in ("general", "tokenizer"))


def supported_tensor_types() -> list[str]:
    from gguf import quants

    return sorted(set(PLAIN_TYPES) | {t.name for t in quants._type_traits})


def _field(reader, key: str):
    field = reader.fields.get(key)
    if field is None or not field.data:
        return None
    value = field.parts[field.data[0]]
    return bytes(value).decode("utf-8", "replace") if field.types and field.types[0].name == "STRING" else value


def inspect_gguf(path: str | Path) -> GGUFInfo:
    """The file's architecture and tensor types, checked against what transformers and gguf can load."""
    path = Path(path)
    if not path.is_file():
        raise CascadeError(f"no GGUF file at {path}")
    gguf = _gguf()
    try:
        reader = gguf.GGUFReader(path)
    except Exception as exc:
        raise CascadeError(f"{path} is not a readable GGUF file: {type(exc).__name__}: {exc}") from exc
    arch = _field(reader, "general.architecture")
    if not isinstance(arch, str):
        raise CascadeError(f"{path} has no general.architecture: not a model GGUF file")
    types = Counter(t.tensor_type.name for t in reader.tensors)
    info = GGUFInfo(path, arch, dict(types), _field(reader, "general.name") or None)
    if arch not in supported_architectures():
        raise CascadeError(
            f"{path.name}: GGUF architecture {arch!r} is not one transformers can load; "
            f"supported: {', '.join(supported_architectures())}"
        )
    unknown = sorted(set(types) - set(supported_tensor_types()))
    if unknown:
        raise CascadeError(
            f"{path.name}: tensor type(s) {', '.join(unknown)} cannot be de-quantized; "
            f"supported: {', '.join(supported_tensor_types())}"
        )
    return info


def split_gguf(path: str | Path) -> tuple[str, str]:
    """(folder, file name), as transformers takes a GGUF checkpoint."""
    p = Path(path).resolve()
    return str(p.parent), p.name


def load_gguf_model(folder: str, gguf_file: str, dtype: torch.dtype, revision: str | None = None):
    """The de-quantized model, as a plain model of its config (so it can be saved, copied, compiled).
    `folder` is a local folder (its file is checked first) or a hub id."""
    from transformers import AutoModelForCausalLM

    if Path(folder).is_dir():
        inspect_gguf(Path(folder) / gguf_file)
    loaded = AutoModelForCausalLM.from_pretrained(folder, gguf_file=gguf_file, dtype=dtype, revision=revision)
    config = loaded.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config  # de-quantized: the weights are plain floats now
    fresh = AutoModelForCausalLM.from_config(config, dtype=dtype)
    missing, unexpected = fresh.load_state_dict(loaded.state_dict(), strict=False)
    missing = [k for k in missing if not _tied(fresh, k)]
    if missing or unexpected:
        raise CascadeError(
            f"{gguf_file}: weights do not fit {type(fresh).__name__}: missing {missing}, extra {unexpected}"
        )
    if getattr(config, "tie_word_embeddings", False):
        fresh.tie_weights()
    return fresh


def _tied(model, key: str) -> bool:
    return key == "lm_head.weight" and getattr(model.config, "tie_word_embeddings", False)


def weights_sha256(model) -> str:
    """A checksum of the model's weights: every tensor's name, dtype, shape and bytes, in name order."""
    h = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        t = tensor.detach().cpu().contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def file_sha256(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def import_gguf(path: str | Path, out: str | Path, dtype: torch.dtype = torch.float32, log=print) -> Path:
    """Write GGUF file `path` as a Hugging Face folder `out` (config, safetensors, tokenizer, gguf.json)."""
    from transformers import AutoTokenizer

    info = inspect_gguf(path)
    folder, name = split_gguf(path)
    log(f"{name}: {info.architecture}, tensors {info.tensor_types}; de-quantizing to {dtype}")
    model = load_gguf_model(folder, name, dtype)
    try:
        tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    except Exception as exc:
        raise CascadeError(f"{name}: could not read its tokenizer: {type(exc).__name__}: {exc}") from exc
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    record = {
        "source": name,
        "source_sha256": file_sha256(path),
        "architecture": info.architecture,
        "tensor_types": info.tensor_types,
        "dtype": str(dtype).removeprefix("torch."),
        "parameters": sum(p.numel() for p in model.parameters()),
        "weights_sha256": weights_sha256(model),
        "command": f"cascade models import {name} --out {out} --dtype {str(dtype).removeprefix('torch.')}",
    }
    (out / "gguf.json").write_text(json.dumps(record, indent=2) + "\n")
    log(f"wrote {out} ({record['parameters'] / 1e6:.1f}M parameters)")
    return out
