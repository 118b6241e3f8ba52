"""An example stack shaped like HLS's ``DownloaderStack`` (cdk/downloader_stack.py in
NASA-IMPACT/hls-sentinel2-downloader-serverless), with ``S2Downloader`` in place of its
downloader function, event source mapping and requeuer.

HLS's own resources are stood in for: the download queue and its dead-letter queue as HLS
builds them (with the visibility timeout raised to six times the function timeout, which
the construct requires), the upload bucket imported by name, the token parameter its
rotator writes, and a secret in place of its Aurora cluster's.
"""

from __future__ import annotations

from aws_cdk import Duration, RemovalPolicy, Stack
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_s3 as s3
from aws_cdk import aws_secretsmanager as secretsmanager
from aws_cdk import aws_sqs as sqs
from aws_cdk import aws_ssm as ssm
from constructs import Construct

from s2_downloader_cdk import S2Downloader, facts

__all__ = ["ExampleStack"]


class ExampleStack(Stack):
    """HLS's downloader stack, reduced to what ``S2Downloader`` takes, and the construct."""

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        identifier: str,
        upload_bucket: str,
        cdse_quota: int,
        enable_downloading: bool = True,
        code: lambda_.Code | None = None,
    ) -> None:
        super().__init__(scope, construct_id)
        # HLS: its Aurora cluster's secret.
        database_secret = secretsmanager.Secret(
            self, f"{identifier}-downloader-rds-secret", removal_policy=RemovalPolicy.RETAIN
        )
        token_parameter = ssm.StringParameter(
            self,
            f"{identifier}-copernicus-token",
            string_value="placeholder",
            parameter_name=f"/hls-s2-downloader-serverless/{identifier}/copernicus-token",
        )
        retention = Duration.days(14)
        to_download_queue = sqs.Queue(
            self,
            f"{identifier}-to-download-queue",
            queue_name=f"hls-s2-downloader-serverless-{identifier}-to-download"[-80:],
            retention_period=retention,
            # HLS: 15 minutes, as long as the function's timeout; raised as the runbook says.
            visibility_timeout=Duration.seconds(
                facts.VISIBILITY_TIMEOUT_FACTOR * facts.FUNCTION_TIMEOUT_SECONDS
            ),
            dead_letter_queue=sqs.DeadLetterQueue(
                max_receive_count=facts.MAX_RECEIVE_COUNT,
                queue=sqs.Queue(self, f"{identifier}-to-download-dlq", retention_period=retention),
            ),
        )
        bucket = s3.Bucket.from_bucket_name(self, "UploadBucket", bucket_name=upload_bucket)
        self.downloader = S2Downloader(
            self,
            "S2Downloader",
            stage=identifier,
            queue=to_download_queue,
            bucket=bucket,
            database_secret=database_secret,
            token_parameter=token_parameter,
            cdse_quota=cdse_quota,
            enabled=enable_downloading,
            code=code,
            insights_version=lambda_.LambdaInsightsVersion.from_insight_version_arn(
                "arn:aws:lambda:us-west-2:580247275435:layer:LambdaInsightsExtension:14"
            ),
        )
