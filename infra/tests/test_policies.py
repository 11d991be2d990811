"""Each policy rule fires on a bad resource, passes a good one, and the stacks pass them all."""

from __future__ import annotations

import json
from dataclasses import replace
from typing import Any

import pytest

from mailstack_infra.mocks import StackRecord
from mailstack_infra.policy_rules import (
    Resource,
    check_stack,
    forbid_public_database,
    forbid_wildcard_iam_actions,
    require_bucket_encryption,
    require_cache_encryption_in_transit,
    require_deletion_protection,
    require_encryption_at_rest,
    require_log_retention,
)

RDS = "aws:rds/instance:Instance"
CACHE = "aws:elasticache/replicationGroup:ReplicationGroup"
SSE = "aws:s3/bucketServerSideEncryptionConfiguration:BucketServerSideEncryptionConfiguration"


def resource(type_: str, **props: Any) -> Resource:
    return Resource(type=type_, name="r", props=props)


def policy(*actions: str) -> str:
    return json.dumps(
        {"Statement": [{"Effect": "Allow", "Action": list(actions), "Resource": ["arn:x"]}]}
    )


@pytest.mark.parametrize(
    ("bad", "good"),
    [
        (resource(RDS, storageEncrypted=False), resource(RDS, storageEncrypted=True)),
        (resource(CACHE), resource(CACHE, atRestEncryptionEnabled=True)),
        (
            resource("aws:sqs/queue:Queue"),
            resource("aws:sqs/queue:Queue", sqsManagedSseEnabled=True),
        ),
        (
            resource("aws:sns/topic:Topic"),
            resource("aws:sns/topic:Topic", kmsMasterKeyId="alias/aws/sns"),
        ),
        (
            resource(SSE, rules=[{"applyServerSideEncryptionByDefault": {"sseAlgorithm": "none"}}]),
            resource(
                SSE, rules=[{"applyServerSideEncryptionByDefault": {"sseAlgorithm": "aws:kms"}}]
            ),
        ),
    ],
)
def test_encryption_rule(bad: Resource, good: Resource) -> None:
    assert require_encryption_at_rest(bad)
    assert require_encryption_at_rest(good) == []


@pytest.mark.parametrize(
    "props",
    [
        {},
        {"transitEncryptionEnabled": False},
        {"transitEncryptionEnabled": True, "transitEncryptionMode": "preferred"},
    ],
)
def test_cache_transit_rule_fires_unless_tls_is_required(props: dict[str, Any]) -> None:
    assert require_cache_encryption_in_transit(resource(CACHE, **props))


def test_cache_transit_rule_passes_required_tls_and_ignores_other_types() -> None:
    required = {"transitEncryptionEnabled": True, "transitEncryptionMode": "required"}
    assert require_cache_encryption_in_transit(resource(CACHE, **required)) == []
    assert require_cache_encryption_in_transit(resource(RDS)) == []


def test_a_plain_text_cache_fails_the_stack_check(prod: StackRecord) -> None:
    resources = [
        replace(r, props={**r.props, "transitEncryptionEnabled": False}) if r.type == CACHE else r
        for r in as_policy_resources(prod)
    ]
    assert check_stack(resources, production=True) == [
        "cache-group: ElastiCache must encrypt in transit (TLS)"
    ]


def test_bucket_encryption_rule_fires_for_a_bucket_without_configuration() -> None:
    bucket = resource("aws:s3/bucket:Bucket", bucket="b")
    assert require_bucket_encryption([bucket])
    assert require_bucket_encryption([bucket, resource(SSE, bucket="b")]) == []


def test_public_database_rule() -> None:
    assert forbid_public_database(resource(RDS, publiclyAccessible=True))
    assert forbid_public_database(resource(RDS, publiclyAccessible=False)) == []


@pytest.mark.parametrize("action", ["*", "s3:*", "sqs:Send*"])
def test_wildcard_action_rule_fires(action: str) -> None:
    assert forbid_wildcard_iam_actions(
        resource("aws:iam/rolePolicy:RolePolicy", policy=policy(action))
    )


def test_wildcard_action_rule_fires_on_not_action() -> None:
    document = json.dumps({"Statement": {"Effect": "Allow", "NotAction": "iam:*", "Resource": "*"}})
    assert forbid_wildcard_iam_actions(resource("aws:iam/policy:Policy", policy=document))


def test_wildcard_action_rule_passes_named_actions() -> None:
    named = resource("aws:iam/rolePolicy:RolePolicy", policy=policy("sqs:SendMessage"))
    assert forbid_wildcard_iam_actions(named) == []


def test_log_retention_rule() -> None:
    assert require_log_retention(resource("aws:cloudwatch/logGroup:LogGroup"))
    assert require_log_retention(resource("aws:cloudwatch/logGroup:LogGroup", retentionInDays=0))
    assert (
        require_log_retention(resource("aws:cloudwatch/logGroup:LogGroup", retentionInDays=30))
        == []
    )


def test_deletion_protection_rule_applies_in_production_only() -> None:
    unprotected_db = resource(RDS, deletionProtection=False)
    unprotected_alb = resource("aws:lb/loadBalancer:LoadBalancer", enableDeletionProtection=False)
    assert require_deletion_protection(unprotected_db, production=True)
    assert require_deletion_protection(unprotected_alb, production=True)
    assert require_deletion_protection(unprotected_db, production=False) == []
    protected = resource(RDS, deletionProtection=True)
    assert require_deletion_protection(protected, production=True) == []


def as_policy_resources(stack: StackRecord) -> list[Resource]:
    return [Resource(type=r.type, name=r.name, props=r.inputs) for r in stack]


def test_prod_passes_every_rule_as_production(prod: StackRecord) -> None:
    assert check_stack(as_policy_resources(prod), production=True) == []


def test_dev_and_localstack_pass_every_rule(dev: StackRecord, localstack: StackRecord) -> None:
    assert check_stack(as_policy_resources(dev), production=False) == []
    assert check_stack(as_policy_resources(localstack), production=False) == []


def test_dev_would_fail_the_production_deletion_rule(dev: StackRecord) -> None:
    assert check_stack(as_policy_resources(dev), production=True)
