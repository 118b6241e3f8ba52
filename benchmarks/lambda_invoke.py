"""The Lambda handler in a fresh process: its import, a cold invocation, then a warm one.

``python -m benchmarks.lambda_invoke`` reads ``{"cold": EVENT, "warm": EVENT}`` on
stdin, with the pipeline's environment set, and prints one JSON line of seconds:
``import`` (the handler module), ``cold`` (the first invocation, which builds the
pools and clients), ``warm`` (the second, reusing them), and the batch item failures.
"""

from __future__ import annotations

import json
import sys
import time

__all__ = ["main"]


class _Context:
    def get_remaining_time_in_millis(self) -> int:
        return 900_000  # Lambda's longest timeout: no record is handed back for lack of time


def main() -> int:
    """Import the handler, invoke it twice, print the timings."""
    events = json.load(sys.stdin)
    started = time.perf_counter()
    from s2_downloader.entrypoints.lambda_handler import handler

    imported = time.perf_counter()
    cold = handler(events["cold"], _Context())
    after_cold = time.perf_counter()
    warm = handler(events["warm"], _Context())
    after_warm = time.perf_counter()
    print(
        json.dumps(
            {
                "import": imported - started,
                "cold": after_cold - imported,
                "warm": after_warm - after_cold,
                "failures": len(cold["batchItemFailures"]) + len(warm["batchItemFailures"]),
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
