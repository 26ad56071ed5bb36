"""How fast the command line answers when no model work is needed (not a test).

Prints the median wall time of fresh ``python -m ecco_adapters.cli`` processes for ``--help``,
``report --help``, ``--version`` and a usage mistake, next to ``python -c pass`` (interpreter
start-up) and ``import ecco_core`` (what an answer would cost if it imported the library).

    .venv/bin/python benchmarks/bench_cli.py
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import time

CASES = {
    "python -c pass": ["-c", "pass"],
    "import ecco_core": ["-c", "import ecco_core"],
    "ecco-core --help": ["-m", "ecco_adapters.cli", "--help"],
    "ecco-core report --help": ["-m", "ecco_adapters.cli", "report", "--help"],
    "ecco-core --version": ["-m", "ecco_adapters.cli", "--version"],
    "ecco-core report (no --prompt)": ["-m", "ecco_adapters.cli", "report"],
}


def median_run(args: list[str], repeats: int = 5) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        subprocess.run([sys.executable, *args], capture_output=True, check=False)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    for name, args in CASES.items():
        print(f"{name:<32} {median_run(args):6.3f} s")


if __name__ == "__main__":
    main()
