"""The deploy template grants every AWS action the code calls, per resource, and no wildcard.

The list of actions is derived from the code, not written by hand: every boto3 operation
called under ``src/s2_downloader`` (the throwaway test stack excepted) is found by name in
botocore's own service models, and mapped to the IAM action that authorises it. A call the
map does not know, or a client for a service not listed here, fails the test, so a new call
cannot ship without its permission.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from botocore import xform_name
from botocore.session import get_session

from tests.unit.test_deploy_template import TEMPLATE, Template, load

PACKAGE = Path(__file__).resolve().parents[2] / "src" / "s2_downloader"
#: Services the code may build clients for; another one needs its policy and a row below.
SERVICES = ("sqs", "s3", "ssm", "secretsmanager")

#: boto3 operation -> the IAM action that authorises it (where the names differ, AWS's
#: "actions defined by" pages say which).
IAM_ACTION = {
    ("sqs", "ReceiveMessage"): "sqs:ReceiveMessage",
    ("sqs", "DeleteMessage"): "sqs:DeleteMessage",
    ("sqs", "ChangeMessageVisibility"): "sqs:ChangeMessageVisibility",
    ("sqs", "GetQueueAttributes"): "sqs:GetQueueAttributes",
    ("sqs", "GetQueueUrl"): "sqs:GetQueueUrl",
    ("sqs", "SendMessage"): "sqs:SendMessage",
    ("sqs", "SendMessageBatch"): "sqs:SendMessage",
    ("s3", "AbortMultipartUpload"): "s3:AbortMultipartUpload",
    ("s3", "CompleteMultipartUpload"): "s3:PutObject",
    ("s3", "CreateMultipartUpload"): "s3:PutObject",
    ("s3", "UploadPart"): "s3:PutObject",
    ("s3", "PutObject"): "s3:PutObject",
    ("s3", "HeadObject"): "s3:GetObject",
    ("s3", "GetObject"): "s3:GetObject",
    ("s3", "HeadBucket"): "s3:ListBucket",
    ("s3", "ListObjectsV2"): "s3:ListBucket",
    ("s3", "ListParts"): "s3:ListMultipartUploadParts",
    ("s3", "ListMultipartUploads"): "s3:ListBucketMultipartUploads",
    ("ssm", "GetParameter"): "ssm:GetParameter",
    ("secretsmanager", "GetSecretValue"): "secretsmanager:GetSecretValue",
}
#: The SQS actions each queue needs, whichever queue it is: the cold start reads every
#: queue's attributes (a FIFO queue is refused), and both receive messages sent to them.
EVERY_QUEUE = {"sqs:GetQueueAttributes", "sqs:SendMessage"}


def _operations() -> dict[str, tuple[str, str]]:
    session = get_session()
    names: dict[str, tuple[str, str]] = {}
    for service in SERVICES:
        for operation in session.get_service_model(service).operation_names:
            names.setdefault(xform_name(operation), (service, operation))
    return names


def _calls() -> Iterator[tuple[str, ast.Call, Path]]:
    for path in sorted(PACKAGE.rglob("*.py")):
        if "testing" in path.relative_to(PACKAGE).parts:
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
                name = node.func.attr
                if name == "get_paginator" and node.args and isinstance(node.args[0], ast.Constant):
                    name = str(node.args[0].value)
                yield name, node, path


def called_operations() -> set[tuple[str, str]]:
    """Every (service, operation) the package calls, found by name in botocore's models."""
    known = _operations()
    return {known[name] for name, _, _ in _calls() if name in known}


def test_every_client_is_for_a_known_service() -> None:
    """``client("x")`` only for the services above: a new one would have no policy."""
    services = {
        str(node.args[0].value)
        for name, node, _ in _calls()
        if name == "client" and node.args and isinstance(node.args[0], ast.Constant)
    }
    assert services
    assert set() == services - set(SERVICES)


def test_every_called_operation_has_an_iam_action() -> None:
    """No operation the code calls is missing from the map (so none can go ungranted)."""
    called = called_operations()
    assert {("sqs", "ReceiveMessage"), ("s3", "UploadPart")} <= called  # the scan finds calls
    assert set() == {op for op in called if op not in IAM_ACTION}


def _statements(node: Any) -> Iterator[dict[str, Any]]:
    """Every IAM statement anywhere under ``node`` (inside !If branches too)."""
    if isinstance(node, dict):
        if "Effect" in node and "Action" in node:
            yield node
        for value in node.values():
            yield from _statements(value)
    elif isinstance(node, list):
        for value in node:
            yield from _statements(value)


def _actions(statement: dict[str, Any]) -> set[str]:
    action = statement["Action"]
    return {action} if isinstance(action, str) else set(action)


def _policies(template: Template) -> dict[str, list[dict[str, Any]]]:
    """The function role's inline policies by name, with their Allow statements."""
    found: dict[str, list[dict[str, Any]]] = {}
    for node in _nodes(template["Resources"]):
        if isinstance(node, dict) and "PolicyName" in node and "PolicyDocument" in node:
            found[node["PolicyName"]] = [
                s for s in _statements(node["PolicyDocument"]) if s["Effect"] == "Allow"
            ]
    return found


def _nodes(node: Any) -> Iterator[Any]:
    yield node
    if isinstance(node, dict):
        for value in node.values():
            yield from _nodes(value)
    elif isinstance(node, list):
        for value in node:
            yield from _nodes(value)


@pytest.fixture(scope="module")
def template() -> Template:
    """The template as shipped."""
    return load(TEMPLATE.read_text(encoding="utf-8"))


def test_the_role_grants_every_action_the_code_calls(template: Template) -> None:
    """Each IAM action behind a called operation is allowed by one of the role's policies."""
    granted = {a for statements in _policies(template).values() for s in statements for a in _actions(s)}
    needed = {IAM_ACTION[op] for op in called_operations()}
    assert set() == needed - granted


def test_each_queue_policy_grants_what_every_queue_needs(template: Template) -> None:
    """The download and the upload queue each allow the calls made on every queue (GetQueueAttributes too)."""
    policies = _policies(template)
    sqs_called = {IAM_ACTION[op] for op in called_operations() if op[0] == "sqs"}
    download = {a for s in policies["download-queue"] for a in _actions(s)}
    upload = {a for s in policies["upload-queue"] for a in _actions(s)}
    assert (set(), set()) == (sqs_called - download, EVERY_QUEUE - upload)


def test_no_allow_statement_has_a_wildcard_action(template: Template) -> None:
    """Least privilege: every allowed action is named (a Deny, like the TLS rule, may use s3:*)."""
    allowed = {a for s in _statements(template["Resources"]) if s["Effect"] == "Allow" for a in _actions(s)}
    assert allowed
    assert set() == {a for a in allowed if "*" in a}


def test_the_bucket_denies_requests_without_tls(template: Template) -> None:
    """The bucket the template creates refuses every request that is not over TLS."""
    policy = template["Resources"]["UploadBucketPolicy"]
    (deny,) = [s for s in _statements(policy) if s["Effect"] == "Deny"]
    assert ("s3:*", {"Bool": {"aws:SecureTransport": "false"}}) == (deny["Action"], deny["Condition"])
    assert {"Ref": "UploadBucket"} == policy["Properties"]["Bucket"]
