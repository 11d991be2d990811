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
LISTENER = "aws:lb/listener:Listener"
LISTENER_RULE = "aws:lb/listenerRule:ListenerRule"
BUCKET_POLICY = "aws:s3/bucketPolicy:BucketPolicy"
KMS_KEY = "aws:kms/key:Key"
KMS_ALIAS = "aws:kms/alias:Alias"
METRIC_ALARM = "aws:cloudwatch/metricAlarm:MetricAlarm"
EVENT_TARGET = "aws:cloudwatch/eventTarget:EventTarget"
LAMBDA_FUNCTION = "aws:lambda/function:Function"
TASK_DEFINITION = "aws:ecs/taskDefinition:TaskDefinition"
SECRET_TYPE = "aws:secretsmanager/secret:Secret"  # noqa: S105  # a type name
SECRET_VERSION_TYPE = "aws:secretsmanager/secretVersion:SecretVersion"  # noqa: S105
WAF_ASSOCIATION = "aws:wafv2/webAclAssociation:WebAclAssociation"
BACKUP_SELECTION = "aws:backup/selection:Selection"
# What CloudWatch (alarms) and EventBridge (rules) need of an encrypted topic's key.
PUBLISH_KEY_ACTIONS = ("kms:Decrypt", "kms:GenerateDataKey")
ALB_LOG_DELIVERY = "logdelivery.elasticloadbalancing.amazonaws.com"
# The gateway's admin-only routes, which the public listener must answer itself.
INTERNAL_PATHS = ("/metrics", "/docs", "/openapi.json")
# A new account's Lambda concurrency quota, and the unreserved concurrency Lambda keeps.
NEW_ACCOUNT_LAMBDA_CONCURRENCY = 10
UNRESERVED_LAMBDA_MINIMUM = 100
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


def require_image_digests(resource: Resource) -> list[str]:
    """Task definitions run images by digest: a tag can be pushed again, and a task started
    later (scaling, a replaced task) would then run code nobody deployed."""
    if resource.type != TASK_DEFINITION or resource.props.get("containerDefinitions") is None:
        return []
    containers = _json(resource.props["containerDefinitions"])
    return [
        f"{resource.name}: container {c.get('name')} runs {c.get('image')}, not an image digest"
        for c in containers
        if "@sha256:" not in str(c.get("image", ""))
    ]


def _json(value: Any) -> Any:
    return json.loads(value) if isinstance(value, str) else value


def _of_type(resources: Sequence[Resource], type_: str) -> list[Resource]:
    return [resource for resource in resources if resource.type == type_]


def _principals(statement: Mapping[str, Any]) -> set[str]:
    principal = statement.get("Principal", {})
    if not isinstance(principal, Mapping):
        return {str(principal)}
    return {str(p) for value in principal.values() for p in _as_list(value)}


def _allows(statement: Mapping[str, Any], action: str) -> bool:
    """Whether an Allow statement's actions cover `action` (IAM wildcards included)."""
    if statement.get("Effect") != "Allow":
        return False
    for granted in _as_list(statement.get("Action", [])):
        granted = str(granted)
        if granted == action or granted in ("*", "kms:*"):
            return True
        if granted.endswith("*") and action.startswith(granted[:-1]):
            return True
    return False


def _key_of_topic(resources: Sequence[Resource], key_id: str) -> Resource | None:
    """The stack's KMS key a topic's `kmsMasterKeyId` names: by ARN, key id, or alias."""
    aliases = {
        str(a.props.get("name")): str(a.props.get("targetKeyId"))
        for a in _of_type(resources, KMS_ALIAS)
    }
    wanted = {key_id, aliases.get(key_id, key_id)}
    for key in _of_type(resources, KMS_KEY):
        if {str(key.props.get("arn")), str(key.props.get("keyId"))} & wanted:
            return key
    return None


def require_alarm_topics_usable_by_publishers(resources: Sequence[Resource]) -> list[str]:
    """A topic that CloudWatch alarms (or EventBridge rules) publish to is encrypted with a
    customer-managed key of the stack whose policy lets that service use it. With the
    AWS-managed `alias/aws/sns` key, or a key that does not allow them, alarms change state
    and notify no one (a stack rule)."""
    publishers: dict[str, set[str]] = {}
    for alarm in _of_type(resources, METRIC_ALARM):
        for arn in [*alarm.props.get("alarmActions", []), *alarm.props.get("okActions", [])]:
            publishers.setdefault(str(arn), set()).add("cloudwatch.amazonaws.com")
    for target in _of_type(resources, EVENT_TARGET):
        publishers.setdefault(str(target.props.get("arn")), set()).add("events.amazonaws.com")
    violations = []
    for topic in _of_type(resources, SNS_TOPIC):
        services = publishers.get(str(topic.props.get("arn")))
        key_id = topic.props.get("kmsMasterKeyId")
        if not services or not key_id:
            continue
        if str(key_id).startswith("alias/aws/"):
            violations.append(
                f"{topic.name}: alarms cannot use the AWS-managed key {key_id}; "
                "encrypt the topic with a customer-managed key"
            )
            continue
        key = _key_of_topic(resources, str(key_id))
        if key is None:
            violations.append(f"{topic.name}: its key {key_id} is not a key of this stack")
            continue
        statements = _statements(key.props.get("policy") or "{}")
        for service in sorted(services):
            granted = [s for s in statements if service in _principals(s)]
            missing = [a for a in PUBLISH_KEY_ACTIONS if not any(_allows(s, a) for s in granted)]
            if missing:
                violations.append(
                    f"{topic.name}: key {key.name} does not allow {service} {missing}"
                )
    return violations


def limit_reserved_lambda_concurrency(
    resources: Sequence[Resource], *, account_concurrency: int = NEW_ACCOUNT_LAMBDA_CONCURRENCY
) -> list[str]:
    """Reserved concurrency fits the account's quota: Lambda keeps min(100, quota) unreserved,
    so a new account (quota 10) can reserve nothing (a stack rule)."""
    reserved = {
        f.name: int(f.props["reservedConcurrentExecutions"])
        for f in _of_type(resources, LAMBDA_FUNCTION)
        if f.props.get("reservedConcurrentExecutions") not in (None, -1)
    }
    available = account_concurrency - min(UNRESERVED_LAMBDA_MINIMUM, account_concurrency)
    if sum(reserved.values()) <= available:
        return []
    return [
        f"{name}: reserves {units} of an account concurrency of {account_concurrency}, which "
        f"leaves {available} to reserve"
        for name, units in sorted(reserved.items())
    ]


def require_task_secrets_have_values(resources: Sequence[Resource]) -> list[str]:
    """Every secret a task definition injects is a secret of the stack with a value: ECS
    cannot start a task whose secret has none, and retries it forever (a stack rule)."""
    secrets = {str(s.props.get("arn")): s for s in _of_type(resources, SECRET_TYPE)}
    valued = {str(v.props.get("secretId")) for v in _of_type(resources, SECRET_VERSION_TYPE)}
    violations = []
    for task in _of_type(resources, TASK_DEFINITION):
        for container in _json(task.props.get("containerDefinitions") or "[]"):
            for entry in container.get("secrets", []):
                arn = str(entry.get("valueFrom"))
                secret = secrets.get(arn)
                names = {arn} | (
                    {str(secret.props.get(key)) for key in ("id", "name")} if secret else set()
                )
                if not names & valued:
                    violations.append(
                        f"{task.name}: {entry.get('name')} comes from {arn}, which no "
                        "secret version of this stack fills"
                    )
    return violations


def _public_load_balancers(resources: Sequence[Resource]) -> list[Resource]:
    return [lb for lb in _of_type(resources, LOAD_BALANCER) if not lb.props.get("internal")]


def require_waf_on_public_load_balancers(resources: Sequence[Resource]) -> list[str]:
    """Every internet-facing load balancer has a WAF web ACL (a stack rule)."""
    protected = {str(a.props.get("resourceArn")) for a in _of_type(resources, WAF_ASSOCIATION)}
    return [
        f"{lb.name}: an internet-facing load balancer without a WAF web ACL"
        for lb in _public_load_balancers(resources)
        if str(lb.props.get("arn")) not in protected
    ]


def require_internal_paths_blocked(resources: Sequence[Resource]) -> list[str]:
    """A public listener that forwards to the gateway answers its admin-only paths itself
    (metrics, the schema, the docs stay off the internet) with a fixed response."""
    public = {str(lb.props.get("arn")) for lb in _public_load_balancers(resources)}
    blocked: dict[str, set[str]] = {}
    for rule in _of_type(resources, LISTENER_RULE):
        if not any(a.get("type") == "fixed-response" for a in rule.props.get("actions", [])):
            continue
        paths = blocked.setdefault(str(rule.props.get("listenerArn")), set())
        for condition in rule.props.get("conditions", []):
            paths.update(condition.get("pathPattern", {}).get("values", []))
    violations = []
    for listener in _of_type(resources, LISTENER):
        forwards = any(a.get("type") == "forward" for a in listener.props.get("defaultActions", []))
        if not forwards or str(listener.props.get("loadBalancerArn")) not in public:
            continue
        open_paths = set(INTERNAL_PATHS) - blocked.get(str(listener.props.get("arn")), set())
        if open_paths:
            violations.append(f"{listener.name}: forwards {sorted(open_paths)} to the targets")
    return violations


def require_alb_log_delivery_principal(resources: Sequence[Resource]) -> list[str]:
    """A load balancer's access-log bucket lets the ELB log delivery service principal write:
    the legacy per-region ELB accounts do not exist in regions opened since August 2022."""
    policies = {str(p.props.get("bucket")): p for p in _of_type(resources, BUCKET_POLICY)}
    violations = []
    for lb in _of_type(resources, LOAD_BALANCER):
        logs = lb.props.get("accessLogs") or {}
        if not logs.get("enabled"):
            continue
        policy = policies.get(str(logs.get("bucket")))
        statements = _statements(policy.props.get("policy") or "{}") if policy else []
        if not any(
            ALB_LOG_DELIVERY in _principals(s) and _allows(s, "s3:PutObject") for s in statements
        ):
            violations.append(
                f"{lb.name}: its log bucket does not let {ALB_LOG_DELIVERY} put objects"
            )
    return violations


def require_database_backup_plan(resources: Sequence[Resource], *, production: bool) -> list[str]:
    """In production, every primary database is in an AWS Backup selection (a stack rule)."""
    if not production:
        return []
    selected = {
        str(arn)
        for selection in _of_type(resources, BACKUP_SELECTION)
        for arn in selection.props.get("resources", [])
    }
    return [
        f"{db.name}: a production database outside every AWS Backup plan"
        for db in _of_type(resources, RDS_INSTANCE)
        if not db.props.get("replicateSourceDb") and str(db.props.get("arn")) not in selected
    ]


RESOURCE_RULES = (
    require_encryption_at_rest,
    require_cache_encryption_in_transit,
    forbid_public_database,
    forbid_wildcard_iam_actions,
    require_log_retention,
    require_image_digests,
)
STACK_RULES = (
    require_bucket_encryption,
    require_alarm_topics_usable_by_publishers,
    limit_reserved_lambda_concurrency,
    require_task_secrets_have_values,
    require_waf_on_public_load_balancers,
    require_internal_paths_blocked,
    require_alb_log_delivery_principal,
)


def check_stack(resources: Sequence[Resource], *, production: bool) -> list[str]:
    """Every rule over every resource: the violations a policy pack run would report."""
    violations = [v for rule in STACK_RULES for v in rule(resources)]
    violations.extend(require_database_backup_plan(resources, production=production))
    for resource in resources:
        for resource_rule in RESOURCE_RULES:
            violations.extend(resource_rule(resource))
        violations.extend(require_deletion_protection(resource, production=production))
    return violations
