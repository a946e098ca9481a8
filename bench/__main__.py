"""``python -m bench``: run every benchmark in turn; each prints its own figures and ratios.

``python -m bench NAME ...`` runs only those (names: the modules below).
"""

from __future__ import annotations

import subprocess
import sys

BENCHMARKS = (
    "lineproto",
    "ingest",
    "pipeline",
    "spool",
    "publish",
    "kpi",
    "rules",
    "refusals",
    "drain",
)


def main() -> int:
    """Run the benchmarks named on the command line, or all; return the worst exit code."""
    names = sys.argv[1:] or list(BENCHMARKS)
    unknown = sorted(set(names) - set(BENCHMARKS))
    if unknown:
        print(f"unknown benchmark(s): {', '.join(unknown)}; choose from {', '.join(BENCHMARKS)}")
        return 2
    worst = 0
    for name in names:
        print(f"\n== bench.{name} ==", flush=True)
        result = subprocess.run([sys.executable, "-m", f"bench.{name}"], check=False)
        worst = max(worst, result.returncode)
    return worst


if __name__ == "__main__":
    sys.exit(main())
