"""Print every law check's p-value on the real code and under each planted bug (docs/testing.md's table).

python scripts/law_pvalues.py        # about 2 minutes on a 2-core CPU
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

import test_laws as laws  # noqa: E402

from cascade.testing.mutation import BY_NAME, applied  # noqa: E402


def main() -> None:
    for name, check in laws.CHECKS.items():
        t = time.perf_counter()
        print(f"real    {name:32s} p = {check():.3g}  ({time.perf_counter() - t:.1f} s)", flush=True)
    for mutant, name in laws.CATCHES.items():
        t = time.perf_counter()
        with applied(BY_NAME[mutant]):
            p = laws.CHECKS[name]()
        print(f"mutant  {mutant:32s} by {name:28s} p = {p:.3g}  ({time.perf_counter() - t:.1f} s)", flush=True)


if __name__ == "__main__":
    main()
