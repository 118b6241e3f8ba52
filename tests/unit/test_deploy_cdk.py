"""deploy/cdk/: the ``S2Downloader`` construct and its example app, synthesized offline.

The example app is run as ``cdk synth`` runs it and its template linted by cfn-lint; stacks
built here check the settings that matter with ``aws_cdk.assertions`` against the same facts
as the SAM template's tests (``s2_downloader_cdk.facts``), and that bad input is refused at
synth with one clear message per rule.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import aws_cdk as cdk
import pytest
from aws_cdk.assertions import Match
from cfnlint.api import lint  # type: ignore[import-untyped]  # cfn-lint ships no py.typed

from s2_downloader_cdk import S2Downloader, facts
from tests.cdk_stacks import Built, full_template, stack
from tests.deploy_templates import Template, resources, synth_example_app

# -- the example app ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def example(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Template]:
    """deploy/cdk/app.py run as ``cdk synth`` runs it, offline: its output directory and template."""
    outdir = tmp_path_factory.mktemp("cdk.out")
    return outdir, synth_example_app(outdir, IDENTIFIER="example", CDSE_QUOTA="14")


def test_the_example_app_passes_cfn_lint(example: tuple[Path, Template]) -> None:
    """cfn-lint reports no error and no warning on the example app's template."""
    _, template = example

    matches = lint(json.dumps(template))

    assert [] == [f"{m.rule.id} {m.rule.severity} {m.path}: {m.message}" for m in matches]


def test_cfn_lint_catches_a_broken_cdk_template(example: tuple[Path, Template]) -> None:
    """The lint above can fail: a misspelt mapping property is an error."""
    _, template = example
    [mapping] = resources(template, "AWS::Lambda::EventSourceMapping").values()
    mapping["Properties"]["MaximumConcurency"] = 14

    assert "E3002" in {m.rule.id for m in lint(json.dumps(template))}


def test_the_example_app_packages_the_source_tree(example: tuple[Path, Template]) -> None:
    """Both functions' code is one asset, a directory (no Docker): the package's source, no caches."""
    outdir, template = example
    keys = {f["Properties"]["Code"]["S3Key"] for f in resources(template, "AWS::Lambda::Function").values()}
    [manifest] = outdir.glob("*.assets.json")
    files = json.loads(manifest.read_text(encoding="utf-8"))["files"]
    [source] = [entry["source"] for name, entry in files.items() if f"{name}.zip" in keys]

    assert 1 == len(keys)
    assert "zip" == source["packaging"]
    package = outdir / source["path"] / "s2_downloader"
    assert (package / "entrypoints" / "requeue_handler.py").is_file()
    assert [] == [p for p in (outdir / source["path"]).rglob("*") if p.name == "__pycache__"]


def test_the_example_app_is_hls_shaped(example: tuple[Path, Template]) -> None:
    """HLS's queue and its dead-letter queue, the token parameter, Lambda Insights on the downloader."""
    _, template = example
    [queue] = [
        q for q in resources(template, "AWS::SQS::Queue").values() if "RedrivePolicy" in q["Properties"]
    ]
    [downloader] = [
        f
        for f in resources(template, "AWS::Lambda::Function").values()
        if f["Properties"]["Handler"] == facts.HANDLER
    ]

    assert "hls-s2-downloader-serverless-example-to-download" == queue["Properties"]["QueueName"]
    assert facts.MAX_RECEIVE_COUNT == queue["Properties"]["RedrivePolicy"]["maxReceiveCount"]
    assert ["arn:aws:lambda:us-west-2:580247275435:layer:LambdaInsightsExtension:14"] == downloader[
        "Properties"
    ]["Layers"]
    [output] = [o for o in template["Outputs"].values() if "Export" in o]
    assert {"Name": "example-requeuer-function-name"} == output["Export"]


# -- the settings that matter -------------------------------------------------------------------


@pytest.fixture(scope="module")
def hls() -> Built:
    """The construct on HLS's resources with its defaults (an imported bucket, no VPC)."""
    return stack()


def _function(built: Built, handler: str) -> dict[str, Any]:
    function: dict[str, Any]
    [function] = [
        f["Properties"]
        for f in resources(built.data, "AWS::Lambda::Function").values()
        if f["Properties"]["Handler"] == handler
    ]
    return function


def test_the_mapping_has_hls_settings_and_reports_batch_item_failures(hls: Built) -> None:
    """Batch size 1, maximum concurrency 14, ReportBatchItemFailures, on HLS's download queue."""
    hls.template.has_resource_properties(
        "AWS::Lambda::EventSourceMapping",
        {
            "BatchSize": facts.BATCH_SIZE,
            "ScalingConfig": {"MaximumConcurrency": facts.MAX_CONCURRENCY},
            "FunctionResponseTypes": ["ReportBatchItemFailures"],
            "Enabled": True,
            "EventSourceArn": {"Fn::GetAtt": [Match.string_like_regexp("^ToDownload"), "Arn"]},
        },
    )
    hls.template.resource_count_is("AWS::Lambda::EventSourceMapping", 1)


def test_the_downloader_runs_the_handler_as_hls_sizes_it(hls: Built) -> None:
    """The documented handler on Python 3.11, 15 minutes, 1200 MB, and the settings of HLS's stack."""
    function = _function(hls, facts.HANDLER)
    variables = function["Environment"]["Variables"]

    assert (facts.RUNTIME, facts.FUNCTION_TIMEOUT_SECONDS, facts.MEMORY_MB) == (
        function["Runtime"],
        function["Timeout"],
        function["MemorySize"],
    )
    assert {
        "STAGE": "test",
        "HUB_API": "cdse",
        "STORE": "s3",
        "UPLOAD_BUCKET": "hls-upload",
        "MAX_DEFER_SECONDS": str(facts.MAX_DEFER_SECONDS),
    }.items() <= variables.items()
    assert variables["COPERNICUS_TOKEN_PARAMETER"]["Ref"].startswith("Token")
    assert {"COPERNICUS_TOKEN_PARAMETER", "DB_CONNECTION_SECRET_ARN", "TO_DOWNLOAD_SQS_QUEUE_URL"} <= set(
        variables
    )
    assert "TO_UPLOAD_SQS_QUEUE_URL" not in variables


def test_the_requeuer_runs_its_handler_with_the_queue_and_the_database(hls: Built) -> None:
    """HLS's requeuer's sizes and the two variables it needs; no hub, no store."""
    function = _function(hls, facts.REQUEUE_HANDLER)

    assert (facts.RUNTIME, facts.REQUEUER_TIMEOUT_SECONDS, facts.REQUEUER_MEMORY_MB) == (
        function["Runtime"],
        function["Timeout"],
        function["MemorySize"],
    )
    assert {"STAGE", "DB_CONNECTION_SECRET_ARN", "TO_DOWNLOAD_SQS_QUEUE_URL"} == set(
        function["Environment"]["Variables"]
    )


def _alarms(built: Built) -> list[dict[str, Any]]:
    return [a["Properties"] for a in resources(built.data, "AWS::CloudWatch::Alarm").values()]


def test_the_alarms_watch_what_the_runbook_says(hls: Built) -> None:
    """Errors as HLS's alarm, the dead-letter queue, the oldest message, no verified download, each outage."""
    by_metric: dict[str, list[dict[str, Any]]] = {}
    for alarm in _alarms(hls):
        by_metric.setdefault(alarm["MetricName"], []).append(alarm)

    [errors] = by_metric["Errors"]
    assert ("AWS/Lambda", facts.ERRORS_ALARM_EVALUATION_PERIODS, 1, "GreaterThanOrEqualToThreshold") == (
        errors["Namespace"],
        errors["EvaluationPeriods"],
        errors["Threshold"],
        errors["ComparisonOperator"],
    )
    [dead] = by_metric["ApproximateNumberOfMessagesVisible"]
    assert (0, "GreaterThanThreshold") == (dead["Threshold"], dead["ComparisonOperator"])
    [oldest] = by_metric["ApproximateAgeOfOldestMessage"]
    assert facts.OLDEST_MESSAGE_ALARM_SECONDS == oldest["Threshold"]
    [silent] = by_metric["DownloadsVerified"]
    assert (
        facts.METRICS_NAMESPACE,
        "breaching",
        facts.NO_DOWNLOAD_ALARM_HOURS,
        [{"Name": "Hub", "Value": "cdse"}],
    ) == (
        silent["Namespace"],
        silent["TreatMissingData"],
        silent["EvaluationPeriods"],
        silent["Dimensions"],
    )
    outages = {
        alarm["Dimensions"][0]["Value"]
        for alarm in by_metric["Outages"]
        if (alarm["Namespace"], alarm["Threshold"], alarm["ComparisonOperator"])
        == (facts.METRICS_NAMESPACE, 0, "GreaterThanThreshold")
    }
    assert set(facts.OUTAGE_COMPONENTS) == outages


def test_the_alarms_notify_the_topic_when_given(hls: Built) -> None:
    """With an alarm topic every alarm notifies it; without one, none has an action."""
    actions = [alarm.get("AlarmActions") for alarm in _alarms(full_template())]

    assert 10 == len(actions)
    assert all(1 == len(a) and a[0]["Ref"].startswith("Alarms") for a in actions if a)
    assert all(actions)
    assert [] == [alarm["AlarmActions"] for alarm in _alarms(hls) if "AlarmActions" in alarm]


def test_lambda_insights_is_optional_and_scoped(hls: Built) -> None:
    """Off by default; on, HLS's layer and an inline policy on the insights log group, no managed policy."""
    assert "Layers" not in _function(hls, facts.HANDLER)

    full = full_template()
    assert 1 == len(_function(full, facts.HANDLER)["Layers"])
    full.template.has_resource_properties(
        "AWS::IAM::Role",
        {
            "Policies": Match.array_with(
                [Match.object_like({"PolicyName": "lambda-insights"})],
            ),
            "ManagedPolicyArns": Match.absent(),
        },
    )


def test_in_a_vpc_both_functions_run_in_its_private_subnets() -> None:
    """With a VPC, both functions get its subnets (private, with egress) and a security group."""
    full = full_template()

    for handler in (facts.HANDLER, facts.REQUEUE_HANDLER):
        config = _function(full, handler)["VpcConfig"]
        assert 2 == len(config["SubnetIds"])
        assert all("private" in subnet["Ref"] for subnet in config["SubnetIds"])
        assert 1 == len(config["SecurityGroupIds"])


def test_an_imported_bucket_gets_a_warning_for_tls() -> None:
    """An imported bucket's policy cannot be changed: synth says what to add where it is managed."""
    built = stack()

    warnings = built.annotations.find_warning("*", Match.string_like_regexp("aws:SecureTransport"))
    assert 1 == len(warnings)
    assert [] == list(resources(built.data, "AWS::S3::BucketPolicy"))


def test_the_defaults_are_the_facts() -> None:
    """The construct's defaults are the facts the SAM template's defaults are held to."""
    parameters = S2Downloader.__init__.__kwdefaults__ or {}
    assert {
        "batch_size": facts.BATCH_SIZE,
        "max_concurrency": facts.MAX_CONCURRENCY,
        "report_batch_item_failures": facts.REPORT_BATCH_ITEM_FAILURES,
        "memory_size": facts.MEMORY_MB,
        "max_defer_seconds": facts.MAX_DEFER_SECONDS,
        "no_download_alarm_hours": facts.NO_DOWNLOAD_ALARM_HOURS,
    } == {
        name: parameters[name]
        for name in (
            "batch_size",
            "max_concurrency",
            "report_batch_item_failures",
            "memory_size",
            "max_defer_seconds",
            "no_download_alarm_hours",
        )
    }


# -- bad input, refused at synth ------------------------------------------------------------------


def _refusals(**arguments: Any) -> list[str]:
    """The messages synth refuses the stack with (each rule's on its own line)."""
    with pytest.raises(RuntimeError, match="Validation failed") as caught:
        stack(**arguments)
    return re.findall(r"\[Hls/S2Downloader\] (.+)", str(caught.value))


def test_a_visibility_timeout_below_six_function_timeouts_is_refused() -> None:
    """HLS's queue as it is today (900 s for a 900 s function) is refused with one message saying the fix."""
    assert [
        "the download queue's visibility timeout of 900 s is below 6 x the function timeout of 900 s:"
        " raise it to at least 5400 s (AWS's advice for an SQS event source; a shorter one lets a"
        " message come back while its download still runs)"
    ] == _refusals(visibility_seconds=900)


def test_a_shorter_function_timeout_needs_a_shorter_visibility_timeout() -> None:
    """Six times a 300 s function timeout is enough."""
    built = stack(visibility_seconds=1800, timeout=cdk.Duration.seconds(300))

    assert 300 == _function(built, facts.HANDLER)["Timeout"]


def test_a_concurrency_above_the_cdse_quota_is_refused() -> None:
    """14 at once on an account allowed 10 is refused, naming both numbers and the fix."""
    assert [
        "maximum concurrency 14 plus 0 other download(s) on the CDSE account is 14, above the account's"
        " quota of 10 downloads at once: lower max_concurrency to 10 or raise the quota with CDSE first"
    ] == _refusals(cdse_quota=10)


def test_the_runners_on_the_same_account_count_against_the_quota() -> None:
    """The runners' downloads and the mapping's share the quota: 14 + 4 > 14 is refused, 10 + 4 is not."""
    refused = _refusals(other_cdse_downloads=4)
    built = stack(other_cdse_downloads=4, max_concurrency=10)

    assert 1 == len(refused)
    assert "lower max_concurrency to 10" in refused[0]
    built.template.has_resource_properties(
        "AWS::Lambda::EventSourceMapping", {"ScalingConfig": {"MaximumConcurrency": 10}}
    )


def test_both_rules_broken_give_one_message_each() -> None:
    """A short visibility and too many downloads: two messages, one per rule."""
    assert 2 == len(_refusals(visibility_seconds=60, cdse_quota=4))


def test_an_imported_queue_needs_its_visibility_and_dead_letter_queue_given() -> None:
    """An imported queue's settings cannot be read: synth asks for them; given, it synthesizes."""
    refused = _refusals(imported_queue=True)

    assert 2 == len(refused)
    assert "pass queue_visibility_timeout (at least 5400 s)" in refused[0]
    assert "pass dead_letter_queue" in refused[1]


def test_an_imported_queue_with_its_settings_given_synthesizes() -> None:
    """queue_visibility_timeout and dead_letter_queue given for an imported queue: no refusal."""
    built = stack(
        imported_queue=True,
        queue_visibility_timeout=cdk.Duration.seconds(5400),
        imported_dead_letter_queue=True,
    )

    built.template.resource_count_is("AWS::Lambda::EventSourceMapping", 1)
