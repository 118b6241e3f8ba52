"""Stacks with the ``S2Downloader`` construct, synthesized in this process, offline.

``stack(...)`` builds HLS's resources as HLS's stack builds them (a queue with its
dead-letter queue, a bucket, the database secret, the token parameter) and the construct on
them; keyword arguments change the construct's arguments or HLS's resources. aws-cdk-lib
is imported here, so a test module that imports this one starts node (jsii) once.
"""

from __future__ import annotations

import functools
from typing import Any

import aws_cdk as cdk
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_s3 as s3
from aws_cdk import aws_secretsmanager as secretsmanager
from aws_cdk import aws_sns as sns
from aws_cdk import aws_sqs as sqs
from aws_cdk import aws_ssm as ssm
from aws_cdk.assertions import Annotations, Template

from s2_downloader_cdk import S2Downloader, facts

__all__ = ["Built", "full_template", "stack"]

#: HLS's Lambda Insights layer (cdk/downloader_stack.py).
INSIGHTS_LAYER = "arn:aws:lambda:us-west-2:580247275435:layer:LambdaInsightsExtension:14"


class Built:
    """A synthesized stack: its template (``assertions.Template`` and plain data) and annotations."""

    def __init__(self, stack: cdk.Stack, construct: S2Downloader) -> None:
        self.stack = stack
        self.construct = construct
        self.template = Template.from_stack(stack)
        self.annotations = Annotations.from_stack(stack)

    @property
    def data(self) -> dict[str, Any]:
        """The CloudFormation template as plain data."""
        return dict(self.template.to_json())


def stack(
    *,
    visibility_seconds: int = facts.VISIBILITY_TIMEOUT_FACTOR * facts.FUNCTION_TIMEOUT_SECONDS,
    imported_queue: bool = False,
    imported_dead_letter_queue: bool = False,
    owned_bucket: bool = False,
    vpc: bool = False,
    upload_queue: bool = False,
    alarm_topic: bool = False,
    **construct: Any,
) -> Built:
    """A stack of HLS's resources and ``S2Downloader`` on them (``construct``: its arguments), synthesized."""
    app = cdk.App()
    scope = cdk.Stack(app, "Hls")
    dead_letter_queue = sqs.Queue(scope, "DeadLetterQueue", retention_period=cdk.Duration.days(14))
    queue: sqs.IQueue = sqs.Queue(
        scope,
        "ToDownload",
        visibility_timeout=cdk.Duration.seconds(visibility_seconds),
        retention_period=cdk.Duration.days(14),
        dead_letter_queue=sqs.DeadLetterQueue(
            max_receive_count=facts.MAX_RECEIVE_COUNT, queue=dead_letter_queue
        ),
    )
    if imported_queue:
        queue = sqs.Queue.from_queue_arn(
            scope, "Imported", "arn:aws:sqs:us-west-2:123456789012:hls-to-download"
        )
    if imported_dead_letter_queue:
        construct.setdefault(
            "dead_letter_queue",
            sqs.Queue.from_queue_arn(
                scope, "ImportedDlq", "arn:aws:sqs:us-west-2:123456789012:hls-to-download-dlq"
            ),
        )
    bucket: s3.IBucket = (
        s3.Bucket(scope, "Upload")
        if owned_bucket
        else s3.Bucket.from_bucket_name(scope, "Upload", "hls-upload")
    )
    arguments: dict[str, Any] = {
        "stage": "test",
        "queue": queue,
        "bucket": bucket,
        "database_secret": secretsmanager.Secret(scope, "DatabaseSecret"),
        "token_parameter": ssm.StringParameter(
            scope,
            "Token",
            string_value="placeholder",
            parameter_name="/hls-s2-downloader-serverless/test/copernicus-token",
        ),
        "cdse_quota": facts.MAX_CONCURRENCY,
    }
    if vpc:
        arguments["vpc"] = ec2.Vpc(
            scope,
            "Vpc",
            max_azs=2,
            nat_gateways=1,
            subnet_configuration=[
                ec2.SubnetConfiguration(name="public", subnet_type=ec2.SubnetType.PUBLIC),
                ec2.SubnetConfiguration(name="private", subnet_type=ec2.SubnetType.PRIVATE_WITH_EGRESS),
            ],
        )
    if upload_queue:
        arguments["upload_queue"] = sqs.Queue(scope, "ToUpload")
    if alarm_topic:
        arguments["alarm_topic"] = sns.Topic(scope, "Alarms")
    arguments.update(construct)
    built = S2Downloader(scope, "S2Downloader", **arguments)
    return Built(scope, built)


@functools.cache
def full_template() -> Built:
    """Every option on: an upload queue, the app's own bucket, a VPC, Lambda Insights, an alarm topic."""
    return stack(
        owned_bucket=True,
        vpc=True,
        insights_version=lambda_.LambdaInsightsVersion.from_insight_version_arn(INSIGHTS_LAYER),
        upload_queue=True,
        alarm_topic=True,
    )
