"""IAM policy documents: least-privilege statements and service trust policies."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import pulumi


@dataclass(frozen=True)
class Statement:
    """One Allow statement: named actions on named resources."""

    actions: Sequence[str]
    resources: Sequence[pulumi.Input[str]]
    conditions: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        wildcards = [action for action in self.actions if "*" in action]
        if wildcards:
            raise ValueError(f"IAM actions must be named, not wildcards: {wildcards}")


def policy_document(statements: Sequence[Statement]) -> pulumi.Output[str]:
    """Render statements as an IAM policy JSON document."""
    rendered: list[dict[str, Any]] = []
    for statement in statements:
        entry: dict[str, Any] = {
            "Effect": "Allow",
            "Action": sorted(statement.actions),
            "Resource": list(statement.resources),
        }
        if statement.conditions:
            entry["Condition"] = dict(statement.conditions)
        rendered.append(entry)
    return pulumi.Output.json_dumps({"Version": "2012-10-17", "Statement": rendered})


def trust_policy(
    service: str, *, source_account: pulumi.Input[str] | None = None
) -> pulumi.Output[str]:
    """A trust policy letting one AWS service assume the role, for this account only.

    The account condition guards against the confused-deputy problem; services whose requests
    carry no `aws:SourceAccount` (Lambda) get the service principal alone.
    """
    statement: dict[str, Any] = {
        "Effect": "Allow",
        "Principal": {"Service": service},
        "Action": "sts:AssumeRole",
    }
    if source_account is not None:
        statement["Condition"] = {"StringEquals": {"aws:SourceAccount": source_account}}
    return pulumi.Output.json_dumps({"Version": "2012-10-17", "Statement": [statement]})
