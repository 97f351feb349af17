"""The exit status of ``selfchat run``: a run that completes nothing is a failure.

0/10 done with every request failing used to exit 0. Now a run whose attempts all failed or
were rejected exits 1 with one line saying why (the most common reason) and where the
details are; a run with some failures exits 0 but says how many and where to look.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

FAILED_FILE = "failed.jsonl"


def run_outcome(stats: Any, run_dir: Path, *, prog: str = "baize-tui") -> int:
    """Print the outcome line for ``stats`` (a :class:`RunStats`) and return the exit status."""
    bad = int(stats.failed) + int(stats.rejected)
    details = Path(run_dir) / FAILED_FILE
    if bad and not stats.done:
        top = stats.reasons.most_common(1)
        why = f" (most common: {top[0][0]}, {top[0][1]}x)" if top else ""
        print(f"{prog}: error: no dialogue completed: {bad} attempt(s) failed or were "
              f"rejected{why}; see {details}", file=sys.stderr)
        return 1
    if bad:
        print(f"{prog}: {bad} dialogue(s) failed or were rejected; see {details} "
              "(re-run the same command to retry the failed ones)", file=sys.stderr)
    return 0
