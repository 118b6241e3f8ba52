"""The Lambda handler on a 10-record SQS event, cold and warm.

Each round is a fresh Python process (``benchmarks.lambda_invoke``), as a new
execution environment is: it imports the handler, handles one event of 10 records
(cold: the first call builds the PostgreSQL pool, the HTTP pool and the SQS client),
then a second event of 10 other records (warm: everything reused). Records carry
download messages for 1 KiB products whose granules are in the database, shaped as
the SQS event source delivers them; each record's granule ends verified, announced on
the upload queue. The figures are the handler's own time inside the process; the
interpreter's start is outside them, as it is outside Lambda's billed duration for
the handler (Lambda's INIT phase covers it).
"""

from __future__ import annotations

import json
import sys
import uuid
from pathlib import Path
from typing import Any

import attrs

from benchmarks.measure import Runs, run_child
from benchmarks.report import Section, Target, table
from benchmarks.stack import cli_env
from s2_downloader.testing.stack import Pipeline, Services

__all__ = ["LambdaRuns", "measure_lambda", "section"]

RECORDS = 10
SIZE = 1024
_ROOT = Path(__file__).resolve().parent.parent


@attrs.define
class LambdaRuns:
    """Seconds per phase over the rounds."""

    imports: Runs = attrs.field(factory=Runs)
    cold: Runs = attrs.field(factory=Runs)
    warm: Runs = attrs.field(factory=Runs)
    process: Runs = attrs.field(factory=Runs)


def _event(pipeline: Pipeline, ids: list[str]) -> dict[str, Any]:
    arn = "arn:aws:sqs:us-east-1:123456789012:" + pipeline.queues.download_url.rsplit("/", 1)[-1]
    return {
        "Records": [
            {
                "messageId": str(uuid.uuid4()),
                "receiptHandle": f"bench-{granule_id}",
                "body": pipeline.message(granule_id),
                "attributes": {"ApproximateReceiveCount": "1", "SentTimestamp": "1700000000000"},
                "messageAttributes": {},
                "eventSource": "aws:sqs",
                "eventSourceARN": arn,
                "awsRegion": "us-east-1",
            }
            for granule_id in ids
        ]
    }


def measure_lambda(services: Services, *, rounds: int = 3) -> LambdaRuns:
    """``rounds`` fresh processes, each a cold then a warm 10-record invocation."""
    result = LambdaRuns()
    for round_no in range(rounds):
        ids = [f"S2BENCH_LAMBDA_{round_no}_{i:02d}" for i in range(2 * RECORDS)]
        with services.pipeline() as pipeline:
            pipeline.seed([(granule_id, SIZE) for granule_id in ids], send=False)
            events = {"cold": _event(pipeline, ids[:RECORDS]), "warm": _event(pipeline, ids[RECORDS:])}
            run = run_child(
                [sys.executable, "-m", "benchmarks.lambda_invoke"],
                env=cli_env(pipeline),
                cwd=str(_ROOT),
                stdin_text=json.dumps(events),
            )
            if run.returncode != 0:
                msg = f"lambda invocation failed ({run.returncode}): {run.stderr[-2000:]}"
                raise RuntimeError(msg)
            timing = json.loads(run.stdout.strip().splitlines()[-1])
            if timing["failures"]:
                msg = f"{timing['failures']} records were handed back: {run.stderr[-2000:]}"
                raise RuntimeError(msg)
            result.imports.add(timing["import"])
            result.cold.add(timing["cold"])
            result.warm.add(timing["warm"])
            result.process.add(run.wall)
    return result


def section(result: LambdaRuns) -> Section:
    """The cold and warm figures."""
    out = Section(title="Lambda handler")
    out.body.append(__doc__.split("\n\n", 1)[1].strip() if __doc__ else "")
    out.body.append("")
    rows = [
        ["import of the handler module", f"{1000 * result.imports.median:.0f}", "", result.imports.spread()],
        [
            f"cold invocation, {RECORDS} records",
            f"{1000 * result.cold.median:.0f}",
            f"{1000 * result.cold.median / RECORDS:.0f}",
            result.cold.spread(),
        ],
        [
            f"warm invocation, {RECORDS} records",
            f"{1000 * result.warm.median:.0f}",
            f"{1000 * result.warm.median / RECORDS:.0f}",
            result.warm.spread(),
        ],
        [
            "whole process (interpreter start to exit)",
            f"{1000 * result.process.median:.0f}",
            "",
            result.process.spread(),
        ],
    ]
    out.body += table(["phase", "ms (median)", "ms per record", "spread (s)"], rows)
    out.targets.append(
        Target(
            name=f"Lambda: {RECORDS}-record event",
            wanted="cold and warm reported",
            measured=f"cold {1000 * (result.imports.median + result.cold.median):.0f} ms incl. import, "
            f"warm {1000 * result.warm.median:.0f} ms",
            met=True,
        )
    )
    return out
