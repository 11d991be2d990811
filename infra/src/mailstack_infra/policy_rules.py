"""Policy rules (CrossGuard style) as plain functions over a resource's type and properties."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

RDS_INSTANCE = "aws:rds/instance:Instance"
CACHE_GROUP = "aws:elasticache/replicationGroup:ReplicationGroup"
SQS_QUEUE = "aws:sqs/queue:Queue"
SNS_TOPIC = "aws:sns/topic:Topic"
S3_BUCKET = "aws:s3/bucket:Bucket"
S3_ENCRYPTION = (
    "aws:s3/bucketServerSideEncryptionConfiguration:BucketServerSideEncryptionConfiguration"
)
LOG_GROUP = "aws:cloudwatch/logGroup:LogGroup"
LOAD_BALANCER = "aws:lb/loadBalancer:LoadBalancer"
IAM_POLICY_HOLDERS = {
    "aws:iam/rolePolicy:RolePolicy": "policy",
    "aws:iam/policy:Policy": "policy",
    "aws:iam/userPolicy:UserPolicy": "policy",
    "aws:iam/groupPolicy:GroupPolicy": "policy",
}
ENCRYPTION_ALGORITHMS = {"AES256", "aws:kms", "aws:kms:dsse"}


@dataclass(frozen=True)
class Resource:
    """What a rule sees of a resource: the same shape in tests and in the policy pack."""

    type: str
    name: str
    props: Mapping[str, Any]


def require_encryption_at_rest(resource: Resource) -> list[str]:
    """Databases, caches, queues, topics and bucket encryption rules must encrypt data at rest."""
    props = resource.props
    if resource.type == RDS_INSTANCE and not props.get("storageEncrypted"):
        return [f"{resource.name}: RDS storage must be encrypted (storage_encrypted=True)"]
    if resource.type == CACHE_GROUP and not props.get("atRestEncryptionEnabled"):
        return [f"{resource.name}: ElastiCache must encrypt at rest (at_rest_encryption_enabled)"]
    if (
        resource.type == SQS_QUEUE
        and not props.get("sqsManagedSseEnabled")
        and not props.get("kmsMasterKeyId")
    ):
        return [f"{resource.name}: SQS queues must use SSE-SQS or SSE-KMS"]
    if resource.type == SNS_TOPIC and not props.get("kmsMasterKeyId"):
        return [f"{resource.name}: SNS topics must be encrypted with a KMS key"]
    if resource.type == S3_ENCRYPTION:
        algorithms = {
            rule.get("applyServerSideEncryptionByDefault", {}).get("sseAlgorithm")
            for rule in props.get("rules") or []
        }
        if not algorithms or not algorithms <= ENCRYPTION_ALGORITHMS:
            return [f"{resource.name}: bucket encryption must use {sorted(ENCRYPTION_ALGORITHMS)}"]
    return []


def require_cache_encryption_in_transit(resource: Resource) -> list[str]:
    """ElastiCache accepts TLS connections only: enabled, and not in the `preferred` mode that
    still lets plain-text clients in."""
    if resource.type != CACHE_GROUP:
        return []
    props = resource.props
    if not props.get("transitEncryptionEnabled"):
        return [f"{resource.name}: ElastiCache must encrypt in transit (TLS)"]
    if props.get("transitEncryptionMode", "required") != "required":
        return [f"{resource.name}: ElastiCache must require TLS (transit_encryption_mode)"]
    return []


def require_bucket_encryption(resources: Sequence[Resource]) -> list[str]:
    """Every bucket of the stack has a server-side encryption configuration (a stack rule)."""
    encrypted = {
        str(resource.props.get("bucket"))
        for resource in resources
        if resource.type == S3_ENCRYPTION
    }
    return [
        f"{resource.name}: bucket has no server-side encryption configuration"
        for resource in resources
        if resource.type == S3_BUCKET and str(resource.props.get("bucket")) not in encrypted
    ]


def forbid_public_database(resource: Resource) -> list[str]:
    """No RDS instance may be reachable from the internet."""
    if resource.type == RDS_INSTANCE and resource.props.get("publiclyAccessible"):
        return [f"{resource.name}: RDS instances must not be publicly accessible"]
    return []


def _statements(document: Any) -> list[Mapping[str, Any]]:
    if isinstance(document, str):
        document = json.loads(document)
    statements = document.get("Statement", [])
    return [statements] if isinstance(statements, Mapping) else list(statements)


def _as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def forbid_wildcard_iam_actions(resource: Resource) -> list[str]:
    """IAM policies allow named actions only: no `*`, no `service:*`, no NotAction."""
    key = IAM_POLICY_HOLDERS.get(resource.type)
    if key is None or resource.props.get(key) is None:
        return []
    violations = []
    for statement in _statements(resource.props[key]):
        if statement.get("Effect") != "Allow":
            continue
        if "NotAction" in statement:
            violations.append(f"{resource.name}: Allow with NotAction grants almost everything")
        wildcards = [a for a in _as_list(statement.get("Action", [])) if "*" in str(a)]
        if wildcards:
            violations.append(f"{resource.name}: wildcard IAM actions {wildcards}")
    return violations


def require_log_retention(resource: Resource) -> list[str]:
    """Log groups expire their events; never-expire (0 or unset) is refused."""
    if resource.type == LOG_GROUP and not resource.props.get("retentionInDays"):
        return [f"{resource.name}: log groups must set retention_in_days"]
    return []


def require_deletion_protection(resource: Resource, *, production: bool) -> list[str]:
    """In production, databases and load balancers cannot be deleted by accident."""
    if not production:
        return []
    if resource.type == RDS_INSTANCE and not resource.props.get("deletionProtection"):
        return [f"{resource.name}: production databases need deletion_protection=True"]
    if resource.type == LOAD_BALANCER and not resource.props.get("enableDeletionProtection"):
        return [f"{resource.name}: production load balancers need deletion protection"]
    return []


RESOURCE_RULES = (
    require_encryption_at_rest,
    require_cache_encryption_in_transit,
    forbid_public_database,
    forbid_wildcard_iam_actions,
    require_log_retention,
)


def check_stack(resources: Sequence[Resource], *, production: bool) -> list[str]:
    """Every rule over every resource: the violations a policy pack run would report."""
    violations = require_bucket_encryption(resources)
    for resource in resources:
        for rule in RESOURCE_RULES:
            violations.extend(rule(resource))
        violations.extend(require_deletion_protection(resource, production=production))
    return violations
