"""``S2Downloader``: s2-downloader in HLS's CDK app, in place of HLS's downloader and requeuer.

It takes what HLS's stack already has (the download queue, the bucket, the database
secret, the token parameter its rotator writes, and optionally a VPC) and builds the
download function, its SQS event source mapping, the requeuer function, the alarms and a
role per function whose inline policies name every action the code calls and no more
(``facts.DOWNLOADER_POLICIES``, the same as deploy/template.yaml's).

Refused at synth, one message each: a queue visibility timeout below six times the
function timeout, and a maximum concurrency that, with the other downloads on the same
CDSE account, exceeds that account's quota.

The Lambda code: ``code`` defaults to this repository's ``src/`` directory, which
synthesizes offline (no Docker, no bundling) but holds the package alone. A deployable
asset also holds its dependencies for Linux x86_64 and Python 3.11: build it as
deploy/README.md says (``pip install --target deploy/.build ...``) and pass
``code=lambda_.Code.from_asset("deploy/.build")``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Final

import jsii
from aws_cdk import (
    Annotations,
    Aws,
    CfnOutput,
    Duration,
    Token,
)
from aws_cdk import aws_cloudwatch as cloudwatch
from aws_cdk import aws_cloudwatch_actions as cloudwatch_actions
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_iam as iam
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_logs as logs
from aws_cdk import aws_s3 as s3
from aws_cdk import aws_secretsmanager as secretsmanager
from aws_cdk import aws_sns as sns
from aws_cdk import aws_sqs as sqs
from aws_cdk import aws_ssm as ssm
from constructs import Construct, IValidation

from s2_downloader_cdk import facts

__all__ = ["DEFAULT_CODE_DIR", "S2Downloader"]

#: ``src/`` of the repository this construct lives in: the package, without its dependencies.
DEFAULT_CODE_DIR: Final = Path(__file__).resolve().parents[3] / "src"
_CODE_EXCLUDE: Final = ["**/__pycache__", "**/*.pyc", "*.egg-info"]
#: SQS's default visibility timeout, where a queue sets none.
_SQS_DEFAULT_VISIBILITY_SECONDS: Final = 30


@jsii.implements(IValidation)
class _Rules:
    """The construct's checks, run by ``app.synth()`` (after the whole app is built)."""

    def __init__(self, check: Callable[[], list[str]]) -> None:
        self._check = check

    def validate(self) -> list[str]:
        """Each broken rule's message; empty when all hold."""
        return self._check()


class S2Downloader(Construct):
    """s2-downloader's functions, event source mapping, alarms and roles on HLS's resources."""

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        stage: str,
        queue: sqs.IQueue,
        bucket: s3.IBucket,
        database_secret: secretsmanager.ISecret,
        token_parameter: ssm.IParameter,
        cdse_quota: int,
        other_cdse_downloads: int = 0,
        dead_letter_queue: sqs.IQueue | None = None,
        queue_visibility_timeout: Duration | None = None,
        upload_queue: sqs.IQueue | None = None,
        vpc: ec2.IVpc | None = None,
        vpc_subnets: ec2.SubnetSelection | None = None,
        security_groups: Sequence[ec2.ISecurityGroup] | None = None,
        code: lambda_.Code | None = None,
        batch_size: int = facts.BATCH_SIZE,
        max_concurrency: int = facts.MAX_CONCURRENCY,
        report_batch_item_failures: bool = facts.REPORT_BATCH_ITEM_FAILURES,
        enabled: bool = True,
        timeout: Duration | None = None,
        memory_size: int = facts.MEMORY_MB,
        max_defer_seconds: int = facts.MAX_DEFER_SECONDS,
        insights_version: lambda_.LambdaInsightsVersion | None = None,
        environment: Mapping[str, str] | None = None,
        log_retention: logs.RetentionDays = logs.RetentionDays.TWO_WEEKS,
        alarm_topic: sns.ITopic | None = None,
        no_download_alarm_hours: int = facts.NO_DOWNLOAD_ALARM_HOURS,
        oldest_message_alarm: Duration | None = None,
        requeuer_export_name: str | None = None,
    ) -> None:
        """Build everything on the given resources.

        ``stage``: HLS's identifier (names, ``STAGE``). ``cdse_quota``: downloads at once the
        CDSE account allows (CDSE's default account quota is 4; ask CDSE for HLS's), shared
        with ``other_cdse_downloads`` (the ``run --concurrency`` of runners on the same
        account). ``dead_letter_queue`` and ``queue_visibility_timeout``: read from
        ``queue`` when it is an ``sqs.Queue`` of this app; required for an imported queue.
        ``upload_queue``: a TO_UPLOAD queue, where one listens (HLS today has none).
        ``vpc``: the functions run in it (its subnets need a NAT route to CDSE); HLS's
        downloader runs outside its VPC, whose subnets are public. ``insights_version``:
        Lambda Insights, as HLS's downloader has it. ``enabled``: the mapping (switch-over
        and roll back). ``requeuer_export_name``: the requeuer's name is exported under
        it (default ``<stage>-requeuer-function-name``, what HLS's ``invoke`` script reads).
        """
        super().__init__(scope, construct_id)
        timeout = timeout or Duration.seconds(facts.FUNCTION_TIMEOUT_SECONDS)
        self.stage = stage
        self.queue = queue
        self.dead_letter_queue = dead_letter_queue or _own_dead_letter_queue(queue)
        code = code or _default_code()

        self.function = self._function(
            "Downloader",
            handler=facts.HANDLER,
            policies=self._downloader_policies(
                queue=queue,
                upload_queue=upload_queue,
                bucket=bucket,
                database_secret=database_secret,
                token_parameter=token_parameter,
                vpc=vpc,
                insights_version=insights_version,
            ),
            code=code,
            timeout=timeout,
            memory_size=memory_size,
            environment={
                "STAGE": stage,
                "HUB_API": "cdse",
                "COPERNICUS_TOKEN_PARAMETER": token_parameter.parameter_name,
                "DB_CONNECTION_SECRET_ARN": database_secret.secret_arn,
                "STORE": "s3",
                "UPLOAD_BUCKET": bucket.bucket_name,
                "TO_DOWNLOAD_SQS_QUEUE_URL": queue.queue_url,
                **({"TO_UPLOAD_SQS_QUEUE_URL": upload_queue.queue_url} if upload_queue else {}),
                "MAX_DEFER_SECONDS": str(max_defer_seconds),
                **(environment or {}),
            },
            description="s2-downloader: downloads Sentinel-2 products for HLS, verified and resumable.",
            log_retention=log_retention,
            vpc=vpc,
            vpc_subnets=vpc_subnets,
            security_groups=security_groups,
            insights_version=insights_version,
        )
        self.event_source_mapping = lambda_.EventSourceMapping(
            self,
            "DownloadQueueMapping",
            target=self.function,
            event_source_arn=queue.queue_arn,
            batch_size=batch_size,
            max_concurrency=max_concurrency,
            report_batch_item_failures=report_batch_item_failures,
            enabled=enabled,
        )
        self.requeuer = self._function(
            "Requeuer",
            handler=facts.REQUEUE_HANDLER,
            policies=self._requeuer_policies(queue, database_secret, vpc),
            code=code,
            timeout=Duration.seconds(facts.REQUEUER_TIMEOUT_SECONDS),
            memory_size=facts.REQUEUER_MEMORY_MB,
            environment={
                "STAGE": stage,
                "TO_DOWNLOAD_SQS_QUEUE_URL": queue.queue_url,
                "DB_CONNECTION_SECRET_ARN": database_secret.secret_arn,
            },
            description="s2-downloader requeue as HLS's requeuer: {date, dry_run[, revive_failed]}.",
            log_retention=log_retention,
            vpc=vpc,
            vpc_subnets=vpc_subnets,
            security_groups=security_groups,
            insights_version=None,
        )
        self._deny_requests_without_tls(bucket)
        self.alarms = self._alarms(
            no_download_alarm_hours=no_download_alarm_hours,
            oldest_message_alarm=oldest_message_alarm or Duration.seconds(facts.OLDEST_MESSAGE_ALARM_SECONDS),
            alarm_topic=alarm_topic,
        )
        CfnOutput(self, "DownloaderFunctionName", value=self.function.function_name)
        CfnOutput(
            self,
            "EventSourceMappingId",
            value=self.event_source_mapping.event_source_mapping_id,
            description="For aws lambda update-event-source-mapping --uuid ... --enabled/--no-enabled.",
        )
        CfnOutput(
            self,
            "RequeuerFunctionName",
            value=self.requeuer.function_name,
            export_name=requeuer_export_name or f"{stage}-requeuer-function-name",
        )

        def check() -> list[str]:
            return _broken_rules(
                queue=queue,
                queue_visibility_timeout=queue_visibility_timeout,
                dead_letter_queue=self.dead_letter_queue,
                timeout=timeout,
                max_concurrency=max_concurrency,
                other_cdse_downloads=other_cdse_downloads,
                cdse_quota=cdse_quota,
            )

        self.node.add_validation(_Rules(check))

    # -- the functions ------------------------------------------------------------------

    def _function(
        self,
        name: str,
        *,
        handler: str,
        policies: Mapping[str, list[iam.PolicyStatement]],
        code: lambda_.Code,
        timeout: Duration,
        memory_size: int,
        environment: Mapping[str, str],
        description: str,
        log_retention: logs.RetentionDays,
        vpc: ec2.IVpc | None,
        vpc_subnets: ec2.SubnetSelection | None,
        security_groups: Sequence[ec2.ISecurityGroup] | None,
        insights_version: lambda_.LambdaInsightsVersion | None,
    ) -> lambda_.Function:
        log_group = logs.LogGroup(self, f"{name}LogGroup", retention=log_retention)
        documents = {
            "logs": [_allow(facts.DOWNLOADER_POLICIES["logs"], [log_group.log_group_arn])],
            **policies,
        }
        role = iam.Role(
            self,
            f"{name}Role",
            assumed_by=iam.ServicePrincipal("lambda.amazonaws.com"),
            description=f"s2-downloader {name.lower()}: least privilege (deploy/README.md lists each call).",
            inline_policies={key: iam.PolicyDocument(statements=value) for key, value in documents.items()},
        )
        # Immutable for the Function: CDK would otherwise attach managed policies of its own
        # (basic execution, VPC access, Lambda Insights), each broader than the inline ones.
        function = lambda_.Function(
            self,
            name,
            runtime=lambda_.Runtime.PYTHON_3_11,
            architecture=lambda_.Architecture.X86_64,
            handler=handler,
            code=code,
            role=role.without_policy_updates(),
            timeout=timeout,
            memory_size=memory_size,
            environment=dict(environment),
            description=description,
            log_group=log_group,
            vpc=vpc,
            vpc_subnets=vpc_subnets,
            security_groups=list(security_groups) if security_groups else None,
            insights_version=insights_version,
        )
        resource = function.node.default_child
        assert isinstance(resource, lambda_.CfnFunction)
        # CDK makes a function depend on its role, which the role's GetAtt already does.
        resource.add_metadata("cfn-lint", {"config": {"ignore_checks": ["W3005"]}})
        return function

    def _downloader_policies(
        self,
        *,
        queue: sqs.IQueue,
        upload_queue: sqs.IQueue | None,
        bucket: s3.IBucket,
        database_secret: secretsmanager.ISecret,
        token_parameter: ssm.IParameter,
        vpc: ec2.IVpc | None,
        insights_version: lambda_.LambdaInsightsVersion | None,
    ) -> dict[str, list[iam.PolicyStatement]]:
        policy = facts.DOWNLOADER_POLICIES
        object_actions = policy["s3-store"] - facts.S3_BUCKET_ACTIONS
        documents = {
            "download-queue": [_allow(policy["download-queue"], [queue.queue_arn])],
            "database-secret": [_allow(policy["database-secret"], [database_secret.secret_arn])],
            "hub-token": [_allow(policy["hub-token"], [token_parameter.parameter_arn])],
            "s3-store": [
                _allow(object_actions, [bucket.arn_for_objects("*")]),
                _allow(facts.S3_BUCKET_ACTIONS, [bucket.bucket_arn]),
            ],
        }
        if upload_queue is not None:
            documents["upload-queue"] = [_allow(policy["upload-queue"], [upload_queue.queue_arn])]
        if database_secret.encryption_key is not None:
            documents["kms-decrypt"] = [
                _allow(policy["kms-decrypt"], [database_secret.encryption_key.key_arn])
            ]
        if vpc is not None:
            documents["vpc-network-interfaces"] = [_allow(facts.VPC_ACTIONS, ["*"])]
        if insights_version is not None:
            insights_log_group = (
                f"arn:{Aws.PARTITION}:logs:{Aws.REGION}:{Aws.ACCOUNT_ID}:log-group:/aws/lambda-insights:*"
            )
            documents["lambda-insights"] = [_allow(facts.INSIGHTS_ACTIONS, [insights_log_group])]
        if queue.encryption_master_key is not None:
            Annotations.of(self).add_warning_v2(
                "s2-downloader:queue-key",
                "the download queue is encrypted with a customer key: grant kms:Decrypt and"
                " kms:GenerateDataKey on it to both functions' roles",
            )
        return documents

    def _requeuer_policies(
        self, queue: sqs.IQueue, database_secret: secretsmanager.ISecret, vpc: ec2.IVpc | None
    ) -> dict[str, list[iam.PolicyStatement]]:
        policy = facts.REQUEUER_POLICIES
        documents = {
            "database-secret": [_allow(policy["database-secret"], [database_secret.secret_arn])],
            "download-queue": [_allow(policy["download-queue"], [queue.queue_arn])],
        }
        if database_secret.encryption_key is not None:
            key = database_secret.encryption_key.key_arn
            documents["kms-decrypt"] = [_allow(facts.DOWNLOADER_POLICIES["kms-decrypt"], [key])]
        if vpc is not None:
            documents["vpc-network-interfaces"] = [_allow(facts.VPC_ACTIONS, ["*"])]
        return documents

    def _deny_requests_without_tls(self, bucket: s3.IBucket) -> None:
        """The bucket refuses plain HTTP; an imported bucket's policy is not this app's to change."""
        statement = iam.PolicyStatement(
            sid="DenyRequestsWithoutTls",
            effect=iam.Effect.DENY,
            principals=[iam.AnyPrincipal()],
            actions=["s3:*"],
            resources=[bucket.bucket_arn, bucket.arn_for_objects("*")],
            conditions={"Bool": {"aws:SecureTransport": "false"}},
        )
        if not bucket.add_to_resource_policy(statement).statement_added:
            Annotations.of(self).add_warning_v2(
                "s2-downloader:bucket-tls",
                "the bucket is imported, so its policy cannot be changed here: add a statement that"
                " denies s3:* when aws:SecureTransport is false where the bucket is managed",
            )

    # -- alarms -------------------------------------------------------------------------

    def _alarms(
        self, *, no_download_alarm_hours: int, oldest_message_alarm: Duration, alarm_topic: sns.ITopic | None
    ) -> dict[str, cloudwatch.Alarm]:
        period = Duration.seconds(facts.ALARM_PERIOD_SECONDS)
        prefix = f"s2-downloader-{self.stage}"
        alarms = {
            "function-errors": cloudwatch.Alarm(
                self,
                "FunctionErrorsAlarm",
                alarm_name=f"{prefix}-function-errors",
                alarm_description=(
                    "The downloader raised in three periods running (as HLS's alarm): an outage of the"
                    " database, queue, store or hub credentials, or every record of a batch had to stay."
                ),
                metric=self.function.metric_errors(period=period, statistic="Sum"),
                threshold=1,
                evaluation_periods=facts.ERRORS_ALARM_EVALUATION_PERIODS,
                comparison_operator=cloudwatch.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
                treat_missing_data=cloudwatch.TreatMissingData.NOT_BREACHING,
            ),
            "oldest-download-message": cloudwatch.Alarm(
                self,
                "OldestMessageAlarm",
                alarm_name=f"{prefix}-oldest-download-message",
                alarm_description=(
                    "The oldest download message has waited too long: the mapping is disabled, the"
                    " function throttled or failing, or the backlog outgrows the concurrency."
                ),
                metric=self.queue.metric_approximate_age_of_oldest_message(
                    period=period, statistic="Maximum"
                ),
                threshold=oldest_message_alarm.to_seconds(),
                evaluation_periods=3,
                comparison_operator=cloudwatch.ComparisonOperator.GREATER_THAN_THRESHOLD,
                treat_missing_data=cloudwatch.TreatMissingData.NOT_BREACHING,
            ),
            "no-downloads-verified": cloudwatch.Alarm(
                self,
                "NoDownloadsVerifiedAlarm",
                alarm_name=f"{prefix}-no-downloads-verified",
                alarm_description=(
                    f"No download was verified for {no_download_alarm_hours} hours. Missing data counts"
                    " as breaching: a function that emits nothing at all is what this alarm is for."
                ),
                metric=cloudwatch.Metric(
                    namespace=facts.METRICS_NAMESPACE,
                    metric_name="DownloadsVerified",
                    dimensions_map={"Hub": "cdse"},
                    statistic="Sum",
                    period=Duration.hours(1),
                ),
                threshold=1,
                evaluation_periods=no_download_alarm_hours,
                comparison_operator=cloudwatch.ComparisonOperator.LESS_THAN_THRESHOLD,
                treat_missing_data=cloudwatch.TreatMissingData.BREACHING,
            ),
        }
        if self.dead_letter_queue is not None:  # else synth fails, naming dead_letter_queue
            alarms["dead-letter-queue-not-empty"] = cloudwatch.Alarm(
                self,
                "DeadLetterQueueAlarm",
                alarm_name=f"{prefix}-dead-letter-queue-not-empty",
                alarm_description=(
                    "Download messages reached the dead-letter queue: granules that failed for good or"
                    " bad messages. Read `s2-downloader failures`, fix, then requeue."
                ),
                metric=self.dead_letter_queue.metric_approximate_number_of_messages_visible(
                    period=period, statistic="Maximum"
                ),
                threshold=0,
                evaluation_periods=1,
                comparison_operator=cloudwatch.ComparisonOperator.GREATER_THAN_THRESHOLD,
                treat_missing_data=cloudwatch.TreatMissingData.NOT_BREACHING,
            )
        for component in facts.OUTAGE_COMPONENTS:
            alarms[f"outage-{component}"] = cloudwatch.Alarm(
                self,
                f"Outage{component.capitalize()}Alarm",
                alarm_name=f"{prefix}-outage-{component}",
                alarm_description=(
                    f"s2-downloader met an outage of its {component} (Outages > 0): nothing is counted"
                    " or failed meanwhile, messages come back later. The ERROR log line names it."
                ),
                metric=cloudwatch.Metric(
                    namespace=facts.METRICS_NAMESPACE,
                    metric_name="Outages",
                    dimensions_map={"Component": component},
                    statistic="Sum",
                    period=period,
                ),
                threshold=0,
                evaluation_periods=1,
                comparison_operator=cloudwatch.ComparisonOperator.GREATER_THAN_THRESHOLD,
                treat_missing_data=cloudwatch.TreatMissingData.NOT_BREACHING,
            )
        if alarm_topic is not None:
            for alarm in alarms.values():
                alarm.add_alarm_action(cloudwatch_actions.SnsAction(alarm_topic))
        return alarms


def _allow(actions: frozenset[str], resources: list[str]) -> iam.PolicyStatement:
    return iam.PolicyStatement(effect=iam.Effect.ALLOW, actions=sorted(actions), resources=resources)


def _default_code() -> lambda_.Code:
    if not DEFAULT_CODE_DIR.is_dir():
        msg = f"no {DEFAULT_CODE_DIR}: pass code= (the package and its dependencies, see deploy/README.md)"
        raise ValueError(msg)
    return lambda_.Code.from_asset(str(DEFAULT_CODE_DIR), exclude=_CODE_EXCLUDE)


def _own_dead_letter_queue(queue: sqs.IQueue) -> sqs.IQueue | None:
    if isinstance(queue, sqs.Queue) and queue.dead_letter_queue is not None:
        return queue.dead_letter_queue.queue
    return None


def _visibility_seconds(queue: sqs.IQueue, given: Duration | None) -> int | None:
    """The queue's visibility timeout in seconds: as given, or as the app's own queue sets it."""
    if given is not None:
        return int(given.to_seconds())
    if not isinstance(queue, sqs.Queue):
        return None
    resource = queue.node.default_child
    assert isinstance(resource, sqs.CfnQueue)
    value = resource.visibility_timeout
    if value is None:
        return _SQS_DEFAULT_VISIBILITY_SECONDS
    return None if Token.is_unresolved(value) else int(value)


def _broken_rules(
    *,
    queue: sqs.IQueue,
    queue_visibility_timeout: Duration | None,
    dead_letter_queue: sqs.IQueue | None,
    timeout: Duration,
    max_concurrency: int,
    other_cdse_downloads: int,
    cdse_quota: int,
) -> list[str]:
    """What is wrong with the deployment, one message per rule (empty: nothing)."""
    problems = []
    function_seconds = int(timeout.to_seconds())
    needed = facts.VISIBILITY_TIMEOUT_FACTOR * function_seconds
    visibility = _visibility_seconds(queue, queue_visibility_timeout)
    if visibility is None:
        problems.append(
            "the download queue's visibility timeout cannot be read from an imported queue:"
            f" pass queue_visibility_timeout (at least {needed} s)"
        )
    elif visibility < needed:
        problems.append(
            f"the download queue's visibility timeout of {visibility} s is below"
            f" {facts.VISIBILITY_TIMEOUT_FACTOR} x the function timeout of {function_seconds} s:"
            f" raise it to at least {needed} s (AWS's advice for an SQS event source; a shorter one"
            " lets a message come back while its download still runs)"
        )
    downloads = max_concurrency + other_cdse_downloads
    if downloads > cdse_quota:
        problems.append(
            f"maximum concurrency {max_concurrency} plus {other_cdse_downloads} other download(s) on the"
            f" CDSE account is {downloads}, above the account's quota of {cdse_quota} downloads at once:"
            f" lower max_concurrency to {max(cdse_quota - other_cdse_downloads, 0)} or raise the quota"
            " with CDSE first"
        )
    if dead_letter_queue is None:
        problems.append(
            "the download queue has no dead-letter queue this app knows: pass dead_letter_queue"
            " (failed granules and bad messages end there, and an alarm watches it)"
        )
    return problems
