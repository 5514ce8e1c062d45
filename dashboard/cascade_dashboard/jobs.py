"""Background runs launched from the dashboard: `cascade run` of a derived policy in a child process.

The policy is derived from a logged run's (`Policy.derive`: same policy, another rule/α), written
with the run's prompts to a job folder, and run as `python -m cascade.cli run POLICY --prompts
PROMPTS --json`; the child logs to the same store, whose URL it gets through `CASCADE_STORE` in its
environment (never its arguments). Progress = JSON lines written (one per prompt) / prompts.
The dashboard itself never writes to the store.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from cascade import Policy, parse_policy


def derived_policy(policy_yaml: str, rule: str, alpha: float, name: str | None = None) -> Policy:
    """The logged policy with `rule` at `alpha` (name: `<name>-<rule>-a<alpha>` unless given)."""
    data = yaml.safe_load(policy_yaml)
    base = parse_policy(data, "<logged policy>")
    name = name or f"{base.name}-{rule}-a{alpha:g}"
    # another rule is replaced whole (its options belong to the old rule); the run must be logged to be seen
    options = dict(base.rule.options) if rule == base.rule.name else {}
    return base.derive(
        name, {"rule": {"name": rule, "alpha": float(alpha), "options": options}, "store": {"enabled": True}}
    )


def policy_yaml(policy: Policy) -> str:
    return yaml.safe_dump(policy.model_dump(mode="json", exclude_none=True), sort_keys=False)


@dataclass
class Job:
    folder: Path
    total: int
    proc: subprocess.Popen
    started: float = field(default_factory=time.time)

    @property
    def out(self) -> Path:
        return self.folder / "stdout.jsonl"

    @property
    def err(self) -> Path:
        return self.folder / "stderr.txt"

    def done_prompts(self) -> int:
        try:
            return sum(1 for line in self.out.read_text(encoding="utf-8").splitlines() if line.strip())
        except OSError:
            return 0

    def returncode(self) -> int | None:
        return self.proc.poll()

    def run_id(self) -> int | None:
        """The store's run id, from the JSON lines or the `logged run N` line."""
        for line in self.out.read_text(encoding="utf-8").splitlines() if self.out.exists() else []:
            try:
                rid = json.loads(line).get("run_id")
            except ValueError:
                continue
            if rid is not None:
                return int(rid)
        m = re.search(r"logged run (\d+)", self.err.read_text(encoding="utf-8")) if self.err.exists() else None
        return int(m.group(1)) if m else None

    def error_tail(self, lines: int = 8) -> str:
        try:
            return "\n".join(self.err.read_text(encoding="utf-8").splitlines()[-lines:])
        except OSError:
            return ""

    def state(self) -> dict[str, Any]:
        rc = self.returncode()
        return {
            "done": self.done_prompts(),
            "total": self.total,
            "returncode": rc,
            "run_id": self.run_id(),
            "seconds": time.time() - self.started,
        }


def guess_base_dir(model: str, recorded: str | None = None) -> Path:
    """Where a logged policy's relative model folder resolves: the policy file's folder the run recorded
    (`runs.info["policy_dir"]`, runs logged since cascade 0.2), else the first of the current folder, its
    `policies/` and the checkout's `policies/` that holds it."""
    here = Path.cwd()
    candidates = ([Path(recorded)] if recorded else []) + [
        here,
        here / "policies",
        Path(__file__).resolve().parents[2] / "policies",
    ]
    return next((c for c in candidates if (c / model).exists()), here)


def launch(
    policy: Policy,
    prompts: list[dict[str, Any]],
    store_url: str,
    *,
    max_new_tokens: int | None = None,
    base_dir: Path | None = None,
    root: Path | None = None,
) -> Job:
    """Start the run in the background (relative model folders resolve against `base_dir`); returns at once."""
    folder = Path(tempfile.mkdtemp(prefix="cascade-dashboard-run-", dir=root))
    (folder / "policy.yaml").write_text(policy_yaml(policy), encoding="utf-8")
    (folder / "prompts.jsonl").write_text("".join(json.dumps(p) + "\n" for p in prompts), encoding="utf-8")
    argv = [
        sys.executable,
        "-m",
        "cascade.cli",
        "run",
        str(folder / "policy.yaml"),
        "--prompts",
        str(folder / "prompts.jsonl"),
        "--json",
    ]
    if max_new_tokens is not None:
        argv += ["--max-new-tokens", str(max_new_tokens)]
    env = {**os.environ, "CASCADE_STORE": store_url}
    with open(folder / "stdout.jsonl", "wb") as out, open(folder / "stderr.txt", "wb") as err:
        proc = subprocess.Popen(
            argv, stdout=out, stderr=err, env=env, cwd=base_dir or Path.cwd(), start_new_session=True
        )
    return Job(folder, len(prompts), proc)
