"""Both deploy templates grant every AWS action the code calls, on the right resource, and nothing wild.

The actions are derived from the code (``tests.aws_calls`` scans the source for boto3
operations, by botocore's own service models), not listed by hand: a new call fails
these tests until the facts (``s2_downloader_cdk.facts``) name its action and both
templates grant it. The SAM template (deploy/template.yaml) and the CDK construct (a stack
with every option on) are held to the same facts, policy by policy, so they cannot drift.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from s2_downloader_cdk import facts
from tests.aws_calls import scan
from tests.deploy_templates import (
    Template,
    allowed_actions,
    as_list,
    downloader_role,
    policy_statements,
    requeuer_role,
    resources,
    role_policies,
    sam_template,
    statements,
)

#: The templates under test, built lazily (the CDK one starts node).
TEMPLATES: dict[str, Callable[[], Template]] = {
    "sam": sam_template,
    "cdk": lambda: _cdk_full().data,
}


def _cdk_full() -> Any:
    from tests.cdk_stacks import full_template

    return full_template()


@pytest.fixture(scope="module", params=list(TEMPLATES))
def template(request: pytest.FixtureRequest) -> Template:
    """Each template: SAM as shipped, and a CDK stack with every option of the construct on."""
    return TEMPLATES[request.param]()


# -- the scan ------------------------------------------------------------------------------------


def test_the_scan_finds_the_calls_the_code_makes() -> None:
    """Direct calls, paginators and the secret read at start are all found, with where they are."""
    found = scan()

    assert {
        ("sqs", "ReceiveMessage"),
        ("sqs", "SendMessageBatch"),
        ("sqs", "GetQueueAttributes"),
        ("s3", "UploadPart"),
        ("s3", "ListParts"),
        ("ssm", "GetParameter"),
        ("secretsmanager", "GetSecretValue"),
    } <= found.operations
    assert set(facts.POLICY_FOR_SERVICE) == found.services
    assert all(":" in call.where for call in found.calls)


def test_every_call_the_code_makes_is_understood() -> None:
    """No client, resource, waiter or operation the scan could not map to an IAM action."""
    assert () == scan().unresolved


def test_the_scan_reports_what_it_cannot_map(tmp_path: Path) -> None:
    """An unmapped operation, another service's client, a waiter and a resource are each reported."""
    (tmp_path / "module.py").write_text(
        "import boto3\n"
        "def f(client, name):\n"
        "    client.tag_queue(QueueUrl='u', Tags={})\n"
        "    boto3.client('kms')\n"
        "    boto3.client(name)\n"
        "    client.get_waiter('object_exists')\n"
        "    boto3.resource('s3')\n"
        "    getattr(client, 'send_message')(QueueUrl='u', MessageBody='b')\n"
        "    client.get_paginator('list_multipart_uploads')\n"
        "    pool.submit(client.abort_multipart_upload, Bucket='b', Key='k', UploadId='u')\n",
        encoding="utf-8",
    )
    (tmp_path / "testing").mkdir()
    (tmp_path / "testing" / "stack.py").write_text("def g(c):\n    c.delete_queue(QueueUrl='u')\n")

    found = scan(tmp_path)

    assert [
        "module.py:3: sqs TagQueue has no IAM action in facts.IAM_ACTION",
        "module.py:4: a client for 'kms', which no policy covers",
        "module.py:5: a client whose service is not a literal",
        "module.py:6: get_waiter() calls operations the scan cannot name",
        "module.py:7: boto3 resource 's3' (its calls cannot be scanned)",
    ] == sorted(found.unresolved)
    assert {
        ("sqs", "TagQueue"),
        ("sqs", "SendMessage"),
        ("s3", "ListMultipartUploads"),
        ("s3", "AbortMultipartUpload"),
    } == found.operations


# -- the facts against the code --------------------------------------------------------------------


def test_the_facts_grant_every_action_the_code_calls() -> None:
    """Each action behind a call is in the downloader policy the facts name for its service."""
    missing = {
        (service, action)
        for service, actions in scan().actions.items()
        for action in actions
        if action not in facts.DOWNLOADER_POLICIES[facts.POLICY_FOR_SERVICE[service]]
    }

    assert set() == missing


def test_the_facts_grant_nothing_the_code_does_not_call() -> None:
    """Every action the facts grant on a queue, the bucket, a secret or the token is called (or polled)."""
    called = set().union(*scan().actions.values())
    needed = called | facts.EVENT_SOURCE_ACTIONS
    data = (*facts.POLICY_FOR_SERVICE.values(), "upload-queue", "hub-credentials")
    grants = {name: facts.DOWNLOADER_POLICIES[name] for name in data}
    grants |= {
        f"requeuer {name}": actions for name, actions in facts.REQUEUER_POLICIES.items() if name != "logs"
    }

    assert {} == {name: actions - needed for name, actions in grants.items() if actions - needed}


# -- the templates -----------------------------------------------------------------------------------


def test_the_downloader_role_grants_every_action_the_code_calls(template: Template) -> None:
    """Each called action is allowed by the downloader's policy for its service, in this template."""
    policies = role_policies(template, downloader_role(template))
    missing = {
        (facts.POLICY_FOR_SERVICE[service], action)
        for service, actions in scan().actions.items()
        for action in actions
        if action not in policies.get(facts.POLICY_FOR_SERVICE[service], set())
    }

    assert set() == missing


def test_each_policy_is_the_facts_policy(template: Template) -> None:
    """Every inline policy of both roles has a facts name and exactly the facts' actions."""
    downloader = role_policies(template, downloader_role(template))
    requeuer = role_policies(template, requeuer_role(template))

    assert {name: facts.DOWNLOADER_POLICIES.get(name) for name in downloader} == downloader
    assert {
        name: facts.REQUEUER_POLICIES.get(name, facts.DOWNLOADER_POLICIES.get(name)) for name in requeuer
    } == (requeuer)
    assert set(facts.REQUEUER_POLICIES) <= set(requeuer)


def test_the_upload_queue_allows_what_the_cold_start_calls(template: Template) -> None:
    """The upload queue's policy has GetQueueAttributes (read at every cold start), not just SendMessage."""
    assert (
        facts.DOWNLOADER_POLICIES["upload-queue"]
        == role_policies(template, downloader_role(template))["upload-queue"]
    )
    assert {"sqs:SendMessage", "sqs:GetQueueAttributes"} <= facts.DOWNLOADER_POLICIES["upload-queue"]


def test_no_allow_statement_has_a_wildcard_action(template: Template) -> None:
    """Least privilege: every allowed action is named (only a Deny, as the TLS rule, says s3:*)."""
    allowed = allowed_actions(template)

    assert allowed
    assert set() == {action for action in allowed if "*" in action}
    assert [] == [s for s in statements(template["Resources"]) if "NotAction" in s or "NotResource" in s]


def test_only_the_network_interfaces_are_granted_on_every_resource(template: Template) -> None:
    """A statement on "*" grants the VPC's network interface actions and nothing else."""
    for role in (downloader_role(template), requeuer_role(template)):
        for name in role_policies(template, role):
            for statement in policy_statements(template, role, name):
                if "*" in as_list(statement["Resource"]):
                    assert ("vpc-network-interfaces", facts.VPC_ACTIONS) == (
                        name,
                        frozenset(statement["Action"]),
                    )


def test_no_managed_policy_is_attached(template: Template) -> None:
    """Every permission is an inline policy checked above: no managed policy adds more."""
    assert {} == {
        name: role["Properties"]["ManagedPolicyArns"]
        for name, role in resources(template, "AWS::IAM::Role").items()
        if role["Properties"].get("ManagedPolicyArns")
    }


def test_the_bucket_denies_requests_without_tls(template: Template) -> None:
    """The bucket the template owns refuses every request that is not over TLS, objects and bucket alike."""
    [policy] = resources(template, "AWS::S3::BucketPolicy").values()
    [deny] = [s for s in statements(policy) if s["Effect"] == "Deny"]

    assert ("s3:*", {"Bool": {"aws:SecureTransport": "false"}}) == (deny["Action"], deny["Condition"])
    assert 2 == len(deny["Resource"])
    assert deny["Principal"] in ("*", {"AWS": "*"})
