"""The deployment's facts in one place: what deploy/template.yaml (SAM) and the ``S2Downloader``
construct (CDK) both build, and what the tests hold both of them to, so the two cannot drift.

Plain constants: importing this module needs neither aws-cdk-lib nor s2_downloader (the
tests check that the names here are the code's: the handlers, the metrics namespace, the
actions the code calls).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final

__all__ = [
    "ABORT_INCOMPLETE_UPLOADS_AFTER_DAYS",
    "ALARM_PERIOD_SECONDS",
    "BATCH_SIZE",
    "DOWNLOADER_POLICIES",
    "ERRORS_ALARM_EVALUATION_PERIODS",
    "EVENT_SOURCE_ACTIONS",
    "FUNCTION_TIMEOUT_SECONDS",
    "HANDLER",
    "IAM_ACTION",
    "INSIGHTS_ACTIONS",
    "MAX_CONCURRENCY",
    "MAX_DEFER_SECONDS",
    "MAX_RECEIVE_COUNT",
    "MEMORY_MB",
    "METRICS_NAMESPACE",
    "NO_DOWNLOAD_ALARM_HOURS",
    "OLDEST_MESSAGE_ALARM_SECONDS",
    "OUTAGE_COMPONENTS",
    "POLICY_FOR_SERVICE",
    "REPORT_BATCH_ITEM_FAILURES",
    "REQUEUER_MEMORY_MB",
    "REQUEUER_POLICIES",
    "REQUEUER_TIMEOUT_SECONDS",
    "REQUEUE_HANDLER",
    "RUNTIME",
    "S3_BUCKET_ACTIONS",
    "VISIBILITY_TIMEOUT_FACTOR",
    "VPC_ACTIONS",
]

# -- the functions ------------------------------------------------------------------------

#: The downloader (docs/interface.md section 1).
HANDLER: Final = "s2_downloader.entrypoints.lambda_handler.handler"
#: HLS's requeuer, invoked by hand (docs/interface.md section 1).
REQUEUE_HANDLER: Final = "s2_downloader.entrypoints.requeue_handler.handler"
RUNTIME: Final = "python3.11"
#: HLS's downloader today: 15 minutes, 1200 MB.
FUNCTION_TIMEOUT_SECONDS: Final = 900
MEMORY_MB: Final = 1200
#: HLS's requeuer today: 15 minutes, 200 MB.
REQUEUER_TIMEOUT_SECONDS: Final = 900
REQUEUER_MEMORY_MB: Final = 200
#: The code's default MAX_DEFER_SECONDS: 48 hours.
MAX_DEFER_SECONDS: Final = 172_800

# -- the queue and the event source mapping ------------------------------------------------------

#: HLS's mapping: one record per invocation, so concurrency alone sets the downloads at once.
BATCH_SIZE: Final = 1
#: HLS's mapping's maximum concurrency.
MAX_CONCURRENCY: Final = 14
#: Not HLS's (it has none): the handler names the records to keep (docs/interface.md section 7).
REPORT_BATCH_ITEM_FAILURES: Final = True
#: AWS's advice for an SQS event source: visibility timeout >= 6 x the function timeout.
VISIBILITY_TIMEOUT_FACTOR: Final = 6
#: HLS's redrive policy: ten receives, then the dead-letter queue.
MAX_RECEIVE_COUNT: Final = 10
#: The bucket aborts unfinished multipart uploads after this many days: longer than
#: MAX_DEFER_SECONDS spans, or a deferred granule's upload would vanish under it.
ABORT_INCOMPLETE_UPLOADS_AFTER_DAYS: Final = 3

# -- alarms ---------------------------------------------------------------------------------------------

#: docs/interface.md section 9.
METRICS_NAMESPACE: Final = "HLS/S2Downloader"
#: The ``Component`` dimension values of the ``Outages`` metric (docs/interface.md section 9).
OUTAGE_COMPONENTS: Final = ("database", "store", "queue", "secrets", "token", "schema")
ALARM_PERIOD_SECONDS: Final = 300
#: HLS's errors alarm: Errors >= 1 in three periods running.
ERRORS_ALARM_EVALUATION_PERIODS: Final = 3
NO_DOWNLOAD_ALARM_HOURS: Final = 12
OLDEST_MESSAGE_ALARM_SECONDS: Final = 43_200

# -- IAM ----------------------------------------------------------------------------------------------------

#: boto3 operation (service, operation) -> the IAM action that authorises it. Where the names
#: differ, AWS's service authorization reference says which action an operation needs.
IAM_ACTION: Final[Mapping[tuple[str, str], str]] = {
    ("sqs", "ReceiveMessage"): "sqs:ReceiveMessage",
    ("sqs", "DeleteMessage"): "sqs:DeleteMessage",
    ("sqs", "DeleteMessageBatch"): "sqs:DeleteMessage",
    ("sqs", "ChangeMessageVisibility"): "sqs:ChangeMessageVisibility",
    ("sqs", "ChangeMessageVisibilityBatch"): "sqs:ChangeMessageVisibility",
    ("sqs", "SendMessage"): "sqs:SendMessage",
    ("sqs", "SendMessageBatch"): "sqs:SendMessage",
    ("sqs", "GetQueueAttributes"): "sqs:GetQueueAttributes",
    ("sqs", "GetQueueUrl"): "sqs:GetQueueUrl",
    ("s3", "PutObject"): "s3:PutObject",
    ("s3", "CreateMultipartUpload"): "s3:PutObject",
    ("s3", "UploadPart"): "s3:PutObject",
    ("s3", "CompleteMultipartUpload"): "s3:PutObject",
    ("s3", "AbortMultipartUpload"): "s3:AbortMultipartUpload",
    ("s3", "ListParts"): "s3:ListMultipartUploadParts",
    ("s3", "GetObject"): "s3:GetObject",
    ("s3", "HeadObject"): "s3:GetObject",
    ("s3", "HeadBucket"): "s3:ListBucket",
    ("s3", "ListObjectsV2"): "s3:ListBucket",
    ("s3", "ListMultipartUploads"): "s3:ListBucketMultipartUploads",
    ("s3", "DeleteObject"): "s3:DeleteObject",
    ("ssm", "GetParameter"): "ssm:GetParameter",
    ("secretsmanager", "GetSecretValue"): "secretsmanager:GetSecretValue",
}

#: What Lambda's queue poller needs on the download queue, on the function's role.
EVENT_SOURCE_ACTIONS: Final = frozenset({"sqs:ReceiveMessage", "sqs:DeleteMessage", "sqs:GetQueueAttributes"})

#: The downloader role's inline policies by name, each on one resource (or two, for the
#: bucket and its objects). Both templates use these names and exactly these actions.
DOWNLOADER_POLICIES: Final[Mapping[str, frozenset[str]]] = {
    # The function's own log group (EMF metric records are log lines).
    "logs": frozenset({"logs:CreateLogStream", "logs:PutLogEvents"}),
    # Everything the code calls on a queue, and the poller's needs.
    "download-queue": frozenset(
        {
            "sqs:ReceiveMessage",
            "sqs:DeleteMessage",
            "sqs:ChangeMessageVisibility",
            "sqs:GetQueueAttributes",
            "sqs:GetQueueUrl",
            "sqs:SendMessage",
        }
    ),
    # Verified granules are announced there; the cold start reads every queue's attributes
    # (a FIFO queue is refused), the upload queue's too.
    "upload-queue": frozenset({"sqs:SendMessage", "sqs:GetQueueAttributes"}),
    "database-secret": frozenset({"secretsmanager:GetSecretValue"}),
    # The stage's hub credentials (SAM, without a token parameter only).
    "hub-credentials": frozenset({"secretsmanager:GetSecretValue"}),
    "hub-token": frozenset({"ssm:GetParameter"}),
    "s3-store": frozenset(
        {
            "s3:PutObject",
            "s3:GetObject",
            "s3:AbortMultipartUpload",
            "s3:ListMultipartUploadParts",
            "s3:ListBucket",
            "s3:ListBucketMultipartUploads",
        }
    ),
    "efs-store": frozenset({"elasticfilesystem:ClientMount", "elasticfilesystem:ClientWrite"}),
    "kms-decrypt": frozenset({"kms:Decrypt"}),
    "vpc-network-interfaces": frozenset(
        {
            "ec2:CreateNetworkInterface",
            "ec2:DescribeNetworkInterfaces",
            "ec2:DeleteNetworkInterface",
            "ec2:AssignPrivateIpAddresses",
            "ec2:UnassignPrivateIpAddresses",
        }
    ),
    # Lambda Insights' extension writes to the /aws/lambda-insights log group (what AWS's
    # CloudWatchLambdaInsightsExecutionRolePolicy grants, scoped to that group).
    "lambda-insights": frozenset({"logs:CreateLogGroup", "logs:CreateLogStream", "logs:PutLogEvents"}),
}

#: The S3 actions granted on the bucket itself; the others are granted on its objects.
S3_BUCKET_ACTIONS: Final = frozenset({"s3:ListBucket", "s3:ListBucketMultipartUploads"})
#: The VPC's network interfaces: EC2 takes no narrower resource for these (the actions of
#: AWS's AWSLambdaVPCAccessExecutionRole), so they are the only ones granted on "*".
VPC_ACTIONS: Final = DOWNLOADER_POLICIES["vpc-network-interfaces"]
INSIGHTS_ACTIONS: Final = DOWNLOADER_POLICIES["lambda-insights"]

#: Which downloader policy grants the actions of each service the code calls.
POLICY_FOR_SERVICE: Final[Mapping[str, str]] = {
    "sqs": "download-queue",
    "s3": "s3-store",
    "ssm": "hub-token",
    "secretsmanager": "database-secret",
}

#: The requeuer's role: it reads the granule table and sends (SendMessageBatch) to the download queue.
REQUEUER_POLICIES: Final[Mapping[str, frozenset[str]]] = {
    "logs": DOWNLOADER_POLICIES["logs"],
    "database-secret": DOWNLOADER_POLICIES["database-secret"],
    "download-queue": frozenset({"sqs:SendMessage"}),
}
