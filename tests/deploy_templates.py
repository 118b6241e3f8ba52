"""The two deploy templates as plain data, and how to read the roles and statements in either.

``sam_template()`` is deploy/template.yaml, short tags turned into their long forms.
``cdk_template(...)`` synthesizes a stack with the ``S2Downloader`` construct, offline
(aws-cdk-lib is imported only when one is asked for: it starts node).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import yaml

from s2_downloader_cdk import facts

__all__ = [
    "CDK_APP",
    "SAM_TEMPLATE",
    "Template",
    "actions_of",
    "allowed_actions",
    "as_list",
    "branches",
    "downloader_role",
    "function_role",
    "load_sam",
    "policy_statements",
    "requeuer_role",
    "resources",
    "role_policies",
    "sam_template",
    "statements",
    "synth_example_app",
]

ROOT = Path(__file__).resolve().parents[1]
SAM_TEMPLATE = ROOT / "deploy" / "template.yaml"
CDK_APP = ROOT / "deploy" / "cdk" / "app.py"

Template = dict[str, Any]


class _CfnLoader(yaml.SafeLoader):
    """A YAML loader that reads CloudFormation's short tags (!Ref, !Sub, !GetAtt ...) as their long forms."""


def _cfn_tag(loader: yaml.SafeLoader, suffix: str, node: yaml.Node) -> dict[str, Any]:
    value: Any
    if isinstance(node, yaml.ScalarNode):
        value = loader.construct_scalar(node)
    elif isinstance(node, yaml.SequenceNode):
        value = loader.construct_sequence(node, deep=True)
    else:
        assert isinstance(node, yaml.MappingNode)
        value = loader.construct_mapping(node, deep=True)
    if suffix == "Ref":
        return {"Ref": value}
    if suffix == "Condition":
        return {"Condition": value}
    if suffix == "GetAtt" and isinstance(value, str):
        value = value.split(".", 1)
    return {f"Fn::{suffix}": value}


_CfnLoader.add_multi_constructor("!", _cfn_tag)


def load_sam(text: str) -> Template:
    """A SAM/CloudFormation YAML template as plain data, short tags turned into their long forms."""
    data = yaml.load(text, Loader=_CfnLoader)  # a SafeLoader subclass: no arbitrary objects
    assert isinstance(data, dict)
    return data


def sam_template() -> Template:
    """deploy/template.yaml as shipped."""
    return load_sam(SAM_TEMPLATE.read_text(encoding="utf-8"))


def synth_example_app(outdir: Path, **env: str) -> Template:
    """Run deploy/cdk/app.py as ``cdk synth`` would (``CDK_OUTDIR``), offline; its one stack's template."""
    environment = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "CDK_"))},
        "CDK_OUTDIR": str(outdir),
        **env,
    }
    completed = subprocess.run(
        [sys.executable, str(CDK_APP)],
        cwd=CDK_APP.parent,
        env=environment,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert 0 == completed.returncode, completed.stderr[-3000:]
    [path] = outdir.glob("*.template.json")
    template: Template = json.loads(path.read_text(encoding="utf-8"))
    return template


# -- reading a template ------------------------------------------------------------------------


def resources(template: Template, kind: str) -> dict[str, dict[str, Any]]:
    """The resources of type ``kind`` by logical id."""
    return {name: res for name, res in template["Resources"].items() if res.get("Type") == kind}


def branches(value: Any) -> Iterator[Any]:
    """Every value a property can resolve to, following both branches of each Fn::If."""
    if isinstance(value, dict) and set(value) == {"Fn::If"}:
        _, when_true, when_false = value["Fn::If"]
        yield from branches(when_true)
        yield from branches(when_false)
    elif isinstance(value, dict) and value == {"Ref": "AWS::NoValue"}:
        return
    else:
        yield value


def as_list(value: Any) -> list[Any]:
    """``value`` itself if a list, else a list of it."""
    return value if isinstance(value, list) else [value]


def statements(node: Any) -> Iterator[dict[str, Any]]:
    """Every IAM statement anywhere under ``node`` (inside Fn::If branches too)."""
    if isinstance(node, dict):
        if "Effect" in node and ("Action" in node or "NotAction" in node):
            yield node
        for value in node.values():
            yield from statements(value)
    elif isinstance(node, list):
        for value in node:
            yield from statements(value)


def actions_of(statement: Mapping[str, Any]) -> set[str]:
    """A statement's actions as a set."""
    return set(as_list(statement.get("Action", [])))


def allowed_actions(template: Template) -> set[str]:
    """Every action an Allow statement anywhere in the template names."""
    return {a for s in statements(template["Resources"]) if s["Effect"] == "Allow" for a in actions_of(s)}


def function_role(template: Template, handler: str) -> str:
    """The logical id of the role of the one function that runs ``handler``."""
    found = [
        res["Properties"]["Role"]
        for res in template["Resources"].values()
        if res.get("Type") in {"AWS::Lambda::Function", "AWS::Serverless::Function"}
        and res["Properties"].get("Handler") == handler
    ]
    assert 1 == len(found), f"{len(found)} functions run {handler}"
    role = found[0]
    assert isinstance(role, dict)
    assert "Fn::GetAtt" in role, role
    name: str = role["Fn::GetAtt"][0]
    return name


def role_policies(template: Template, role: str) -> dict[str, frozenset[str]]:
    """The role's inline policies, name -> the actions their Allow statements name (every branch)."""
    found: dict[str, set[str]] = {}
    for policy in as_list(template["Resources"][role]["Properties"].get("Policies", [])):
        for branch in branches(policy):
            actions = found.setdefault(branch["PolicyName"], set())
            for statement in statements(branch["PolicyDocument"]):
                if statement["Effect"] == "Allow":
                    actions |= actions_of(statement)
    return {name: frozenset(actions) for name, actions in found.items()}


def policy_statements(template: Template, role: str, name: str) -> list[dict[str, Any]]:
    """The Allow statements of the role's inline policy ``name`` (every branch)."""
    return [
        statement
        for policy in as_list(template["Resources"][role]["Properties"].get("Policies", []))
        for branch in branches(policy)
        if branch["PolicyName"] == name
        for statement in statements(branch["PolicyDocument"])
        if statement["Effect"] == "Allow"
    ]


def downloader_role(template: Template) -> str:
    """The downloader function's role."""
    return function_role(template, facts.HANDLER)


def requeuer_role(template: Template) -> str:
    """The requeuer function's role."""
    return function_role(template, facts.REQUEUE_HANDLER)
