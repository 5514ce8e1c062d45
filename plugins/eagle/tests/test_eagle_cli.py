"""`cascade eagle ...`: clear refusals."""

from __future__ import annotations

import subprocess
import sys

import pytest


@pytest.mark.slow
def test_the_train_command_refuses_bad_arguments(tmp_path):
    run = [
        sys.executable,
        "-m",
        "cascade.cli",
        "eagle",
        "train",
        "--target",
        str(tmp_path),
        "--out",
        str(tmp_path / "o"),
    ]
    no_budget = subprocess.run(run, capture_output=True, text=True)
    assert no_budget.returncode != 0 and "give a budget" in no_budget.stderr
    no_model = subprocess.run([*run, "--minutes", "1"], capture_output=True, text=True)
    assert no_model.returncode != 0 and "not a model folder" in no_model.stderr
