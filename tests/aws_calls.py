"""The AWS operations the code calls, found in its source: what the deploy templates must grant.

Every module under a directory is parsed (``ast``, nothing is imported) and every call is
looked up by name in botocore's own service models of the services the code builds
clients for: ``x.send_message(...)``, ``x.get_paginator("list_parts")`` and
``getattr(x, "head_object")`` all count. What the scan cannot resolve is reported rather
than skipped: a client for a service it does not know, a client whose service is not a
literal, a boto3 resource, a waiter, a presigned URL, an operation without an IAM action in
``facts.IAM_ACTION``.
"""

from __future__ import annotations

import ast
import functools
from collections.abc import Iterator
from pathlib import Path

import attrs
from botocore import xform_name
from botocore.session import get_session

from s2_downloader_cdk import facts

__all__ = ["PACKAGE", "SERVICES", "Call", "Scan", "scan"]

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "s2_downloader"
#: The services the code may build clients for; another needs a policy in facts first.
SERVICES = frozenset(facts.POLICY_FOR_SERVICE)
#: The throwaway test stack (moto, the hub simulator) is never run in a deployment.
SKIPPED = frozenset({"testing"})
#: Client methods that call operations the scan cannot name.
_OPAQUE = frozenset({"get_waiter", "generate_presigned_url", "generate_presigned_post"})


@attrs.frozen
class Call:
    """One operation called somewhere in the code."""

    service: str
    operation: str
    where: str

    @property
    def action(self) -> str | None:
        """The IAM action that authorises it; ``None`` when ``facts.IAM_ACTION`` does not know."""
        return facts.IAM_ACTION.get((self.service, self.operation))


@attrs.frozen
class Scan:
    """What a scan found: the calls, the services of the clients built, and what it could not resolve."""

    calls: tuple[Call, ...]
    services: frozenset[str]
    unresolved: tuple[str, ...]

    @property
    def operations(self) -> frozenset[tuple[str, str]]:
        """Every (service, operation) called."""
        return frozenset((call.service, call.operation) for call in self.calls)

    @property
    def actions(self) -> dict[str, frozenset[str]]:
        """The IAM actions the calls need, per service (calls without one are in ``unresolved``)."""
        found: dict[str, set[str]] = {}
        for call in self.calls:
            if call.action is not None:
                found.setdefault(call.service, set()).add(call.action)
        return {service: frozenset(actions) for service, actions in found.items()}


@functools.cache
def _operations() -> dict[str, tuple[tuple[str, str], ...]]:
    """Method name -> the (service, operation) pairs of SERVICES it names."""
    session = get_session()
    names: dict[str, list[tuple[str, str]]] = {}
    for service in sorted(SERVICES):
        for operation in session.get_service_model(service).operation_names:
            names.setdefault(xform_name(operation), []).append((service, operation))
    return {name: tuple(pairs) for name, pairs in names.items()}


def _literal(node: ast.Call, keyword: str) -> str | None:
    """The call's first argument (or ``keyword=``) when it is a string literal."""
    if node.args and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str):
        return node.args[0].value
    for item in node.keywords:
        if item.arg == keyword and isinstance(item.value, ast.Constant) and isinstance(item.value.value, str):
            return item.value.value
    return None


def _called_name(node: ast.Call) -> str | None:
    if isinstance(node.func, ast.Attribute):
        return node.func.attr
    if isinstance(node.func, ast.Name):
        return node.func.id
    return None


def _getattr_name(node: ast.Call) -> str | None:
    """``getattr(x, "name")``'s name, when it is a literal."""
    if len(node.args) > 1 and isinstance(node.args[1], ast.Constant) and isinstance(node.args[1].value, str):
        return node.args[1].value
    return None


def _modules(root: Path) -> Iterator[Path]:
    for path in sorted(root.rglob("*.py")):
        if not SKIPPED & set(path.relative_to(root).parts[:-1]):
            yield path


def scan(root: Path = PACKAGE) -> Scan:
    """Every AWS operation the modules under ``root`` (``testing/`` excepted) call or hand on."""
    found = _Found()
    for path in _modules(root):
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        for node in ast.walk(tree):
            where = f"{path.relative_to(root)}:{getattr(node, 'lineno', 0)}"
            if isinstance(node, ast.Attribute):
                # Called or not: ``pool.submit(client.upload_part, ...)`` uses it as much.
                found.operation(node.attr, where)
            elif isinstance(node, ast.Call):
                _call(node, where, found)
    return Scan(
        calls=tuple(found.calls), services=frozenset(found.services), unresolved=tuple(found.unresolved)
    )


@attrs.define
class _Found:
    calls: list[Call] = attrs.field(factory=list)
    services: set[str] = attrs.field(factory=set)
    unresolved: list[str] = attrs.field(factory=list)

    def operation(self, name: str, where: str) -> None:
        for service, operation in _operations().get(name, ()):
            call = Call(service=service, operation=operation, where=where)
            self.calls.append(call)
            if call.action is None:
                self.unresolved.append(
                    f"{where}: {service} {operation} has no IAM action in facts.IAM_ACTION"
                )


def _call(node: ast.Call, where: str, found: _Found) -> None:
    """What a call says beyond its attribute: a client's service, a paginator's or getattr's operation."""
    name = _called_name(node)
    if name in {"client", "resource"}:
        service = _literal(node, "service_name")
        if service is None:
            if name == "client":
                found.unresolved.append(f"{where}: a client whose service is not a literal")
            return
        if name == "resource":
            found.unresolved.append(f"{where}: boto3 resource {service!r} (its calls cannot be scanned)")
        found.services.add(service)
        if service not in SERVICES:
            found.unresolved.append(f"{where}: a client for {service!r}, which no policy covers")
    elif name in _OPAQUE:
        found.unresolved.append(f"{where}: {name}() calls operations the scan cannot name")
    elif name == "get_paginator":
        operation = _literal(node, "operation_name")
        if operation is None:
            found.unresolved.append(f"{where}: a paginator whose operation is not a literal")
        else:
            found.operation(operation, where)
    elif name == "getattr":
        operation = _getattr_name(node)
        if operation is not None:
            found.operation(operation, where)
