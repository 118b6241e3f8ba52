#!/usr/bin/env python3
"""The example app, shaped like HLS's cdk/app.py: settings from the environment, one stack.

``python deploy/cdk/app.py`` (or ``cdk synth`` in deploy/cdk/) writes the CloudFormation
template to ``$CDK_OUTDIR`` (default ``cdk.out``); offline, no AWS account needed. The tests
run it as it is.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from aws_cdk import App, Tags
from aws_cdk import aws_lambda as lambda_

sys.path.insert(0, str(Path(__file__).resolve().parent))

from example_stack import ExampleStack

app = App()

identifier = os.environ.get("IDENTIFIER", "example").replace("/", "")
upload_bucket = os.environ.get("UPLOAD_BUCKET", f"hls-s2-downloader-{identifier}-upload")
enable_downloading = os.environ.get("ENABLE_DOWNLOADING", "TRUE") == "TRUE"
# Downloads at once HLS's CDSE account allows (CDSE's default quota is 4 per account).
cdse_quota = int(os.environ.get("CDSE_QUOTA", "14"))
# The package with its dependencies (deploy/README.md); the package alone when unset.
code_dir = os.environ.get("S2_DOWNLOADER_CODE")

ExampleStack(
    app,
    f"hls-s2-downloader-serverless-{identifier}",
    identifier=identifier,
    upload_bucket=upload_bucket,
    cdse_quota=cdse_quota,
    enable_downloading=enable_downloading,
    code=lambda_.Code.from_asset(code_dir) if code_dir else None,
)

for key, value in {
    "Project": "hls-s2-downloader-serverless",
    "Stack": identifier,
    "Owner": os.environ.get("OWNER", "example"),
}.items():
    Tags.of(app).add(key, value)

app.synth()
