"""deploy/template.yaml: lint-clean, and each setting operators rely on is there and checked."""

from __future__ import annotations

import copy
import importlib
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from cfnlint.api import lint  # type: ignore[import-untyped]  # cfn-lint ships no py.typed

from s2_downloader.adapters.metrics import NAMESPACE
from s2_downloader.entrypoints.config import Settings
from s2_downloader_cdk import facts
from tests.deploy_templates import SAM_TEMPLATE as TEMPLATE
from tests.deploy_templates import Template, as_list, branches, resources, sam_template

#: The code's default for MAX_DEFER_SECONDS (docs/interface.md): 48 hours.
CODE_MAX_DEFER_SECONDS = 172_800


@pytest.fixture(scope="module")
def template() -> Template:
    """The template as shipped."""
    return sam_template()


# -- reading the template -------------------------------------------------------------

_resources = resources
_branches = branches
_as_list = as_list


def _default(template: Template, value: Any) -> Any:
    """A literal, or the default of the parameter it refers to."""
    if isinstance(value, dict) and set(value) == {"Ref"}:
        return template["Parameters"][value["Ref"]].get("Default")
    return value


def _possible(template: Template, value: Any) -> list[int]:
    """Every number ``value`` may take: a literal, or a parameter's allowed values or bounds."""
    if isinstance(value, dict) and set(value) == {"Ref"}:
        parameter = template["Parameters"][value["Ref"]]
        if "AllowedValues" in parameter:
            return [int(v) for v in parameter["AllowedValues"]]
        return [int(parameter[key]) for key in ("Default", "MinValue", "MaxValue") if key in parameter]
    return [int(value)]


def _statements(template: Template) -> Iterator[tuple[str, dict[str, Any]]]:
    for name, role in _resources(template, "AWS::IAM::Role").items():
        for policy in _as_list(role["Properties"].get("Policies", [])):
            for branch in _branches(policy):
                for statement in _as_list(branch["PolicyDocument"]["Statement"]):
                    yield f"{name}/{branch['PolicyName']}", statement
    for name, policy in _resources(template, "AWS::IAM::Policy").items():
        for statement in _as_list(policy["Properties"]["PolicyDocument"]["Statement"]):
            yield name, statement


# -- the checks (each returns what is wrong; empty when all is well) ------------------------


def mapping_problems(template: Template) -> list[str]:
    """The SQS event source mapping: partial batch responses, HLS's batch size and concurrency by default."""
    mappings = _resources(template, "AWS::Lambda::EventSourceMapping")
    if len(mappings) != 1:
        return [f"expected one event source mapping, found {len(mappings)}"]
    [props] = [m["Properties"] for m in mappings.values()]
    problems = []
    if "ReportBatchItemFailures" not in props.get("FunctionResponseTypes", []):
        problems.append("FunctionResponseTypes lacks ReportBatchItemFailures")
    concurrency = props.get("ScalingConfig", {}).get("MaximumConcurrency")
    if _default(template, concurrency) != facts.MAX_CONCURRENCY:
        problems.append(
            f"MaximumConcurrency defaults to {_default(template, concurrency)!r}, not {facts.MAX_CONCURRENCY}"
        )
    if _default(template, props.get("BatchSize", 10)) != facts.BATCH_SIZE:
        problems.append(f"BatchSize defaults to {_default(template, props.get('BatchSize'))!r}")
    if max(_possible(template, props.get("BatchSize", 10))) > 10:
        problems.append("BatchSize may exceed 10, more records than one invocation can be given")
    return problems


def visibility_problems(template: Template) -> list[str]:
    """Every download queue's visibility timeout is at least six times every allowed downloader timeout."""
    functions = {
        **_resources(template, "AWS::Serverless::Function"),
        **_resources(template, "AWS::Lambda::Function"),
    }
    timeouts = [
        t
        for f in functions.values()
        if f["Properties"].get("Handler") == facts.HANDLER
        for t in _possible(template, f["Properties"].get("Timeout", 3))
    ]
    problems = []
    queues = _resources(template, "AWS::SQS::Queue")
    for name, queue in queues.items():
        if "RedrivePolicy" not in queue["Properties"]:
            continue  # a dead-letter queue is not consumed by the function
        visibility = queue["Properties"].get("VisibilityTimeout", 30)
        for timeout in timeouts:
            seconds = _resolve_visibility(template, visibility, timeout)
            if seconds < facts.VISIBILITY_TIMEOUT_FACTOR * timeout:
                problems.append(f"{name}: visibility {seconds} s < 6 x function timeout {timeout} s")
    if not any("RedrivePolicy" in q["Properties"] for q in queues.values()):
        problems.append("no queue with a dead-letter redrive policy")
    return problems


def _resolve_visibility(template: Template, visibility: Any, timeout: int) -> int:
    if isinstance(visibility, dict) and "Fn::FindInMap" in visibility:
        mapping, key, field = visibility["Fn::FindInMap"]
        assert key == {"Ref": "FunctionTimeout"}, "the visibility must follow the function timeout"
        return int(template["Mappings"][mapping][str(timeout)][field])
    return min(_possible(template, visibility))


def alarm_problems(template: Template) -> list[str]:
    """The alarms of docs/interface.md section 10 exist, Outages per component; the no-download one
    watches the emitted metric, silence as breaching."""
    alarms = [a["Properties"] for a in _resources(template, "AWS::CloudWatch::Alarm").values()]

    def find(namespace: str, metric: str) -> list[dict[str, Any]]:
        return [a for a in alarms if a.get("Namespace") == namespace and a.get("MetricName") == metric]

    problems = [
        f"no alarm on {namespace} {metric}"
        for namespace, metric in [
            ("AWS/SQS", "ApproximateNumberOfMessagesVisible"),
            ("AWS/SQS", "ApproximateAgeOfOldestMessage"),
            ("AWS/Lambda", "Errors"),
            (NAMESPACE, "DownloadsVerified"),
        ]
        if not find(namespace, metric)
    ]
    components = {
        d["Value"]
        for alarm in find(NAMESPACE, "Outages")
        for d in alarm.get("Dimensions", [])
        if d["Name"] == "Component"
        and alarm.get("Threshold") == 0
        and alarm.get("ComparisonOperator") == "GreaterThanThreshold"
    }
    problems += [f"no alarm on Outages > 0 for {c}" for c in facts.OUTAGE_COMPONENTS if c not in components]
    for alarm in find("AWS/Lambda", "Errors"):
        if (alarm.get("EvaluationPeriods"), alarm.get("Threshold")) != (
            facts.ERRORS_ALARM_EVALUATION_PERIODS,
            1,
        ):
            problems.append("the errors alarm is not HLS's (Errors >= 1 in three periods running)")
    for alarm in find(NAMESPACE, "DownloadsVerified"):
        if alarm.get("TreatMissingData") != "breaching":
            problems.append("the no-download alarm does not treat missing data as breaching")
        if [d["Name"] for d in alarm.get("Dimensions", [])] != ["Hub"]:
            problems.append("the no-download alarm's dimensions are not the metric's ([Hub])")
    return problems


def lifecycle_problems(template: Template) -> list[str]:
    """The created bucket aborts incomplete multipart uploads, later than a granule may stay deferred."""
    max_defer = max(CODE_MAX_DEFER_SECONDS, int(template["Parameters"]["MaxDeferSeconds"]["Default"]))
    days = [
        _default(template, rule["AbortIncompleteMultipartUpload"]["DaysAfterInitiation"])
        for bucket in _resources(template, "AWS::S3::Bucket").values()
        for rule in bucket["Properties"].get("LifecycleConfiguration", {}).get("Rules", [])
        if rule.get("Status") == "Enabled" and "AbortIncompleteMultipartUpload" in rule
    ]
    if not days:
        return ["no enabled lifecycle rule aborts incomplete multipart uploads"]
    return [
        f"uploads aborted after {d} days, within MAX_DEFER_SECONDS" for d in days if d * 86_400 <= max_defer
    ]


#: The only actions a statement may grant on every resource: the VPC network interfaces of the function.
_UNSCOPABLE = facts.VPC_ACTIONS


def iam_problems(template: Template) -> list[str]:
    """No wildcard action, no NotAction, no managed policy, and resource '*' only where EC2 needs it."""
    problems = [
        f"{name}: managed policies are not reviewed here"
        for name, role in _resources(template, "AWS::IAM::Role").items()
        if role["Properties"].get("ManagedPolicyArns")
    ]
    statements = list(_statements(template))
    if not statements:
        problems.append("no IAM statements found")
    for where, statement in statements:
        if "NotAction" in statement or "NotResource" in statement:
            problems.append(f"{where}: NotAction/NotResource")
        actions = _as_list(statement.get("Action", []))
        problems += [f"{where}: wildcard action {a!r}" for a in actions if not isinstance(a, str) or "*" in a]
        resources = [r for value in _as_list(statement.get("Resource", [])) for r in _branches(value)]
        if "*" in resources and not set(actions) <= _UNSCOPABLE:
            problems.append(f"{where}: resource '*' for {sorted(set(actions) - _UNSCOPABLE)}")
    return problems


def function_problems(template: Template) -> list[str]:
    """The downloader and the requeuer run the documented handlers on Python 3.11, with HLS's sizes."""
    functions = [f["Properties"] for f in _resources(template, "AWS::Serverless::Function").values()]
    expected = {
        facts.HANDLER: (facts.FUNCTION_TIMEOUT_SECONDS, facts.MEMORY_MB),
        facts.REQUEUE_HANDLER: (facts.REQUEUER_TIMEOUT_SECONDS, facts.REQUEUER_MEMORY_MB),
    }
    handlers = sorted(str(props.get("Handler")) for props in functions)
    if handlers != sorted(expected):
        return [f"handlers {handlers}, not {sorted(expected)}"]
    problems = []
    for props in functions:
        handler = props["Handler"]
        if props.get("Runtime") != facts.RUNTIME:
            problems.append(f"{handler}: runtime {props.get('Runtime')!r}")
        sizes = (_default(template, props.get("Timeout")), _default(template, props.get("MemorySize")))
        if sizes != expected[handler]:
            problems.append(f"{handler}: timeout and memory {sizes}, not {expected[handler]}")
    return problems


def queue_problems(template: Template) -> list[str]:
    """The created download queue moves a message to the dead-letter queue after HLS's ten receives."""
    receives = _default(
        template, template["Resources"]["DownloadQueue"]["Properties"]["RedrivePolicy"]["maxReceiveCount"]
    )
    if receives != facts.MAX_RECEIVE_COUNT:
        return [f"maxReceiveCount defaults to {receives!r}, not {facts.MAX_RECEIVE_COUNT}"]
    return []


CHECKS: list[Callable[[Template], list[str]]] = [
    mapping_problems,
    visibility_problems,
    alarm_problems,
    lifecycle_problems,
    iam_problems,
    function_problems,
    queue_problems,
]


# -- the tests -------------------------------------------------------------------------------


def test_cfn_lint_finds_nothing() -> None:
    """cfn-lint (with the SAM transform) reports no error and no warning on the template."""
    matches = lint(TEMPLATE.read_text(encoding="utf-8"))

    assert [] == [f"{m.rule.id} {m.rule.severity} line {m.linenumber}: {m.message}" for m in matches]


def test_cfn_lint_catches_a_broken_template() -> None:
    """The lint call above can fail: an unknown property on the mapping is an error."""
    broken = TEMPLATE.read_text(encoding="utf-8").replace(
        "BatchSize: !Ref BatchSize", "BatchSize: !Ref BatchSize\n      MaximumConcurency: 14"
    )

    assert ["E3002"] == [m.rule.id for m in lint(broken)]


@pytest.mark.parametrize("check", CHECKS, ids=lambda c: c.__name__)
def test_template_passes(check: Callable[[Template], list[str]], template: Template) -> None:
    """The shipped template passes each check of what operators rely on."""
    assert [] == check(template)


def _mapping(t: Template) -> dict[str, Any]:
    [mapping] = _resources(t, "AWS::Lambda::EventSourceMapping").values()
    properties: dict[str, Any] = mapping["Properties"]
    return properties


def _alarm(t: Template, metric: str) -> dict[str, Any]:
    [alarm] = [
        a for a in _resources(t, "AWS::CloudWatch::Alarm").values() if a["Properties"]["MetricName"] == metric
    ]
    properties: dict[str, Any] = alarm["Properties"]
    return properties


def _role_statement(t: Template, policy_name: str) -> dict[str, Any]:
    for policy in t["Resources"]["FunctionRole"]["Properties"]["Policies"]:
        for branch in _branches(policy):
            if branch["PolicyName"] == policy_name:
                statement: dict[str, Any] = branch["PolicyDocument"]["Statement"][0]
                return statement
    raise AssertionError(policy_name)


MUTATIONS: dict[str, tuple[Callable[[Template], None], Callable[[Template], list[str]]]] = {
    "no ReportBatchItemFailures": (
        lambda t: _mapping(t).pop("FunctionResponseTypes") and None,
        mapping_problems,
    ),
    "concurrency default 10": (
        lambda t: t["Parameters"]["MaxConcurrency"].update(Default=10),
        mapping_problems,
    ),
    "visibility equal to the timeout": (
        lambda t: t["Mappings"]["VisibilityTimeoutFor"]["900"].update(Seconds=900),
        visibility_problems,
    ),
    "a literal visibility too short for the largest timeout": (
        lambda t: t["Resources"]["DownloadQueue"]["Properties"].update(VisibilityTimeout=3600),
        visibility_problems,
    ),
    "no-download alarm ignores missing data": (
        lambda t: _alarm(t, "DownloadsVerified").update(TreatMissingData="notBreaching"),
        alarm_problems,
    ),
    "no-download alarm on a dimension the metric lacks": (
        lambda t: _alarm(t, "DownloadsVerified").update(Dimensions=[{"Name": "Stage", "Value": "x"}]),
        alarm_problems,
    ),
    "dead-letter alarm gone": (
        lambda t: t["Resources"].pop("DeadLetterQueueNotEmptyAlarm") and None,
        alarm_problems,
    ),
    "lifecycle rule gone": (
        lambda t: t["Resources"]["UploadBucket"]["Properties"].pop("LifecycleConfiguration") and None,
        lifecycle_problems,
    ),
    "uploads aborted within the deferral budget": (
        lambda t: t["Parameters"]["AbortIncompleteUploadsAfterDays"].update(Default=2),
        lifecycle_problems,
    ),
    "a wildcard action": (
        lambda t: _role_statement(t, "s3-store").update(Action=["s3:*"]),
        iam_problems,
    ),
    "a wildcard inside an action": (
        lambda t: _role_statement(t, "download-queue").update(Action=["sqs:Receive*"]),
        iam_problems,
    ),
    "resource '*' on a data action": (
        lambda t: _role_statement(t, "database-secret").update(Resource="*"),
        iam_problems,
    ),
    "a managed policy": (
        lambda t: t["Resources"]["FunctionRole"]["Properties"].update(
            ManagedPolicyArns=["arn:aws:iam::aws:policy/AdministratorAccess"]
        ),
        iam_problems,
    ),
    "another handler": (
        lambda t: t["Resources"]["Function"]["Properties"].update(Handler="app.handler"),
        function_problems,
    ),
    "the requeuer on another runtime": (
        lambda t: t["Resources"]["RequeuerFunction"]["Properties"].update(Runtime="python3.9"),
        function_problems,
    ),
    "an outage component without its alarm": (
        lambda t: t["Resources"].pop("OutageTokenAlarm") and None,
        alarm_problems,
    ),
    "the errors alarm after one period": (
        lambda t: _alarm(t, "Errors").update(EvaluationPeriods=1),
        alarm_problems,
    ),
    "batch size 10 by default": (
        lambda t: t["Parameters"]["BatchSize"].update(Default=10),
        mapping_problems,
    ),
    "twenty receives": (
        lambda t: t["Parameters"]["MaxReceiveCount"].update(Default=20),
        queue_problems,
    ),
}


@pytest.mark.parametrize("name", MUTATIONS)
def test_each_check_catches_a_broken_copy(name: str, template: Template) -> None:
    """A copy of the template with one thing broken fails the check that guards it."""
    mutate, check = MUTATIONS[name]
    broken = copy.deepcopy(template)

    mutate(broken)

    assert [] != check(broken)


def test_the_facts_are_the_codes() -> None:
    """The handlers the facts name exist, and the namespace and deferral budget are the code's."""
    for handler in (facts.HANDLER, facts.REQUEUE_HANDLER):
        module, name = handler.rsplit(".", 1)
        assert callable(getattr(importlib.import_module(module), name)), handler
    assert NAMESPACE == facts.METRICS_NAMESPACE
    assert Settings().max_defer_seconds == facts.MAX_DEFER_SECONDS == CODE_MAX_DEFER_SECONDS
    assert facts.ABORT_INCOMPLETE_UPLOADS_AFTER_DAYS * 86_400 > facts.MAX_DEFER_SECONDS


def test_the_template_defaults_are_the_facts(template: Template) -> None:
    """Each parameter default that mirrors a fact equals it (the CDK test checks the same facts)."""
    defaults = {name: spec.get("Default") for name, spec in template["Parameters"].items()}
    assert {
        "BatchSize": facts.BATCH_SIZE,
        "MaxConcurrency": facts.MAX_CONCURRENCY,
        "MaxReceiveCount": facts.MAX_RECEIVE_COUNT,
        "FunctionTimeout": facts.FUNCTION_TIMEOUT_SECONDS,
        "MemorySize": facts.MEMORY_MB,
        "MaxDeferSeconds": facts.MAX_DEFER_SECONDS,
        "AbortIncompleteUploadsAfterDays": facts.ABORT_INCOMPLETE_UPLOADS_AFTER_DAYS,
        "NoDownloadAlarmHours": facts.NO_DOWNLOAD_ALARM_HOURS,
        "OldestMessageAlarmSeconds": facts.OLDEST_MESSAGE_ALARM_SECONDS,
    } == {
        name: defaults[name]
        for name in (
            "BatchSize",
            "MaxConcurrency",
            "MaxReceiveCount",
            "FunctionTimeout",
            "MemorySize",
            "MaxDeferSeconds",
            "AbortIncompleteUploadsAfterDays",
            "NoDownloadAlarmHours",
            "OldestMessageAlarmSeconds",
        )
    }
