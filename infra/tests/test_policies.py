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
    limit_reserved_lambda_concurrency,
    require_alarm_topics_usable_by_publishers,
    require_bucket_encryption,
    require_cache_encryption_in_transit,
    require_deletion_protection,
    require_encryption_at_rest,
    require_image_digests,
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
            resource("aws:sns/topic:Topic", kmsMasterKeyId="arn:aws:kms:eu-west-1:1:key/k"),
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
    """As a policy pack sees the stack: each resource's properties, outputs included."""
    return [Resource(type=r.type, name=r.name, props=r.outputs) for r in stack]


def test_prod_passes_every_rule_as_production(prod: StackRecord) -> None:
    assert check_stack(as_policy_resources(prod), production=True) == []


def test_dev_and_localstack_pass_every_rule(dev: StackRecord, localstack: StackRecord) -> None:
    assert check_stack(as_policy_resources(dev), production=False) == []
    assert check_stack(as_policy_resources(localstack), production=False) == []


def test_dev_would_fail_the_production_deletion_rule(dev: StackRecord) -> None:
    assert check_stack(as_policy_resources(dev), production=True)


# Classes of mistakes issue 14 found in a first real deployment: each rule fires on the prod
# stack with the mistake put back, and names it.

ALARM_TOPIC = ("aws:sns/topic:Topic", "alarms-topic")


def with_changed(stack: StackRecord, type_: str, name: str, **props: Any) -> list[Resource]:
    """The stack as the policy pack sees it, one resource's properties changed."""
    return [
        replace(r, props={**r.props, **props}) if (r.type, r.name) == (type_, name) else r
        for r in as_policy_resources(stack)
    ]


def without(stack: StackRecord, type_: str, name: str | None = None) -> list[Resource]:
    return [
        r
        for r in as_policy_resources(stack)
        if not (r.type == type_ and (name is None or r.name == name))
    ]


def test_alarms_on_a_topic_under_the_aws_managed_key_fail_the_stack_check(
    prod: StackRecord,
) -> None:
    resources = with_changed(prod, *ALARM_TOPIC, kmsMasterKeyId="alias/aws/sns")
    assert check_stack(resources, production=True) == [
        "alarms-topic: alarms cannot use the AWS-managed key alias/aws/sns; encrypt the topic "
        "with a customer-managed key"
    ]


def test_a_key_that_does_not_let_cloudwatch_publish_fails_the_stack_check(
    prod: StackRecord,
) -> None:
    key = prod.one("aws:kms/key:Key", "alarms-key")
    statements = key.json("policy")["Statement"]
    admin_only = json.dumps({"Statement": [s for s in statements if "AWS" in s["Principal"]]})
    resources = with_changed(prod, "aws:kms/key:Key", "alarms-key", policy=admin_only)
    violations = require_alarm_topics_usable_by_publishers(resources)
    assert violations == [
        "alarms-topic: key alarms-key does not allow cloudwatch.amazonaws.com "
        "['kms:Decrypt', 'kms:GenerateDataKey']",
        "alarms-topic: key alarms-key does not allow events.amazonaws.com "
        "['kms:Decrypt', 'kms:GenerateDataKey']",
    ]


def test_a_topic_nothing_publishes_to_is_not_judged() -> None:
    topic = Resource(
        "aws:sns/topic:Topic", "quiet", {"arn": "t", "kmsMasterKeyId": "alias/aws/sns"}
    )
    assert require_alarm_topics_usable_by_publishers([topic]) == []


def test_reserving_lambda_concurrency_in_a_new_account_fails_the_stack_check(
    prod: StackRecord,
) -> None:
    resources = with_changed(
        prod, "aws:lambda/function:Function", "cleanup-function", reservedConcurrentExecutions=1
    )
    assert check_stack(resources, production=True) == [
        "cleanup-function: reserves 1 of an account concurrency of 10, which leaves 0 to reserve"
    ]


def test_reserved_concurrency_fits_an_account_with_the_default_quota() -> None:
    function = Resource("aws:lambda/function:Function", "f", {"reservedConcurrentExecutions": 900})
    assert limit_reserved_lambda_concurrency([function], account_concurrency=1000) == []
    assert limit_reserved_lambda_concurrency([function], account_concurrency=999)


def test_a_task_secret_without_a_value_fails_the_stack_check(prod: StackRecord) -> None:
    resources = without(
        prod, "aws:secretsmanager/secretVersion:SecretVersion", "secrets-sendgrid-api-key"
    )
    (violation,) = check_stack(resources, production=True)
    assert violation.startswith("processor-task: SENDGRID_API_KEY comes from ")
    assert violation.endswith("which no secret version of this stack fills")


def test_a_public_load_balancer_without_waf_fails_the_stack_check(prod: StackRecord) -> None:
    resources = without(prod, "aws:wafv2/webAclAssociation:WebAclAssociation")
    assert check_stack(resources, production=True) == [
        "edge-alb: an internet-facing load balancer without a WAF web ACL"
    ]


def test_admin_paths_forwarded_to_the_gateway_fail_the_stack_check(prod: StackRecord) -> None:
    resources = without(prod, "aws:lb/listenerRule:ListenerRule")
    assert check_stack(resources, production=True) == [
        "edge-https: forwards ['/docs', '/metrics', '/openapi.json'] to the targets"
    ]


def test_the_legacy_elb_account_principal_fails_the_stack_check(prod: StackRecord) -> None:
    bucket = prod.one("aws:lb/loadBalancer:LoadBalancer", "edge-alb").inputs["accessLogs"]["bucket"]
    (policy,) = [
        p for p in prod.of_type("aws:s3/bucketPolicy:BucketPolicy") if p.inputs["bucket"] == bucket
    ]
    document = policy.json("policy")
    for statement in document["Statement"]:
        if statement.get("Sid") == "AllowAlbAccessLogs":
            statement["Principal"] = {"AWS": "arn:aws:iam::156460612806:root"}
    resources = with_changed(prod, policy.type, policy.name, policy=json.dumps(document))
    assert check_stack(resources, production=True) == [
        "edge-alb: its log bucket does not let logdelivery.elasticloadbalancing.amazonaws.com "
        "put objects"
    ]


def test_an_image_by_tag_fails_the_image_digest_rule(prod: StackRecord) -> None:
    task = prod.one("aws:ecs/taskDefinition:TaskDefinition", "gateway-task")
    definitions = task.json("containerDefinitions")
    definitions[0]["image"] = definitions[0]["image"].split("@")[0] + ":1.2.3"
    tagged = Resource(task.type, task.name, {"containerDefinitions": json.dumps(definitions)})
    assert require_image_digests(tagged) == [
        f"gateway-task: container gateway runs {definitions[0]['image']}, not an image digest"
    ]


def test_a_production_database_outside_aws_backup_fails_the_stack_check(
    prod: StackRecord, dev: StackRecord
) -> None:
    resources = without(prod, "aws:backup/selection:Selection")
    assert check_stack(resources, production=True) == [
        "database-primary: a production database outside every AWS Backup plan"
    ]
    assert "database-primary: a production database outside every AWS Backup plan" in (
        check_stack(as_policy_resources(dev), production=True)
    )
