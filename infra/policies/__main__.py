"""The mailstack policy pack: wraps the plain rules of mailstack_infra.policy_rules."""

from collections.abc import Callable

from pulumi_policy import (
    EnforcementLevel,
    PolicyConfigSchema,
    PolicyPack,
    ReportViolation,
    ResourceValidationArgs,
    ResourceValidationPolicy,
    StackValidationArgs,
    StackValidationPolicy,
)

from mailstack_infra.policy_rules import (
    NEW_ACCOUNT_LAMBDA_CONCURRENCY,
    Resource,
    forbid_public_database,
    forbid_wildcard_iam_actions,
    limit_reserved_lambda_concurrency,
    require_alarm_topics_usable_by_publishers,
    require_alb_log_delivery_principal,
    require_bucket_encryption,
    require_cache_encryption_in_transit,
    require_database_backup_plan,
    require_deletion_protection,
    require_encryption_at_rest,
    require_image_digests,
    require_internal_paths_blocked,
    require_log_retention,
    require_task_secrets_have_values,
    require_waf_on_public_load_balancers,
)

Rule = Callable[[Resource], list[str]]
StackRule = Callable[[list[Resource]], list[str]]


def _resource(args: ResourceValidationArgs) -> Resource:
    return Resource(type=args.resource_type, name=args.name, props=args.props)


def _resource_policy(name: str, description: str, rule: Rule) -> ResourceValidationPolicy:
    def validate(args: ResourceValidationArgs, report_violation: ReportViolation) -> None:
        for violation in rule(_resource(args)):
            report_violation(violation, None)

    return ResourceValidationPolicy(name=name, description=description, validate=validate)


def _deletion_protection(args: ResourceValidationArgs, report_violation: ReportViolation) -> None:
    production = bool(args.get_config().get("production", False))
    for violation in require_deletion_protection(_resource(args), production=production):
        report_violation(violation, None)


def _stack_resources(args: StackValidationArgs) -> list[Resource]:
    return [Resource(r.resource_type, r.name, r.props) for r in args.resources]


def _stack_policy(name: str, description: str, rule: StackRule) -> StackValidationPolicy:
    def validate(args: StackValidationArgs, report_violation: ReportViolation) -> None:
        for violation in rule(_stack_resources(args)):
            report_violation(violation, None)

    return StackValidationPolicy(name=name, description=description, validate=validate)


def _lambda_concurrency(args: StackValidationArgs, report_violation: ReportViolation) -> None:
    quota = int(args.get_config().get("accountConcurrency", NEW_ACCOUNT_LAMBDA_CONCURRENCY))
    resources = _stack_resources(args)
    for violation in limit_reserved_lambda_concurrency(resources, account_concurrency=quota):
        report_violation(violation, None)


def _backup_plan(args: StackValidationArgs, report_violation: ReportViolation) -> None:
    production = bool(args.get_config().get("production", False))
    resources = _stack_resources(args)
    for violation in require_database_backup_plan(resources, production=production):
        report_violation(violation, None)


PRODUCTION_FLAG = PolicyConfigSchema(
    properties={"production": {"type": "boolean", "default": False}}
)


PolicyPack(
    name="mailstack",
    enforcement_level=EnforcementLevel.MANDATORY,
    policies=[
        _resource_policy(
            "encryption-at-rest",
            "RDS, ElastiCache, SQS, SNS and S3 encryption settings encrypt data at rest",
            require_encryption_at_rest,
        ),
        _resource_policy(
            "cache-encryption-in-transit",
            "ElastiCache replication groups accept TLS connections only",
            require_cache_encryption_in_transit,
        ),
        _stack_policy(
            "buckets-encrypted",
            "Every S3 bucket has a server-side encryption configuration",
            require_bucket_encryption,
        ),
        _stack_policy(
            "alarm-topics-usable",
            "Topics that alarms and rules publish to use a customer-managed key that allows them",
            require_alarm_topics_usable_by_publishers,
        ),
        _stack_policy(
            "task-secrets-have-values",
            "Every secret a task definition injects has a value in the stack",
            require_task_secrets_have_values,
        ),
        _stack_policy(
            "waf-on-public-load-balancers",
            "Internet-facing load balancers have a WAF web ACL",
            require_waf_on_public_load_balancers,
        ),
        _stack_policy(
            "internal-paths-blocked",
            "Public listeners answer /metrics, /docs and /openapi.json themselves",
            require_internal_paths_blocked,
        ),
        _stack_policy(
            "alb-log-delivery-principal",
            "ALB log buckets let the ELB log delivery service principal write",
            require_alb_log_delivery_principal,
        ),
        _resource_policy(
            "image-digests",
            "Task definitions run images by digest",
            require_image_digests,
        ),
        StackValidationPolicy(
            name="lambda-reserved-concurrency",
            description="Reserved Lambda concurrency fits the account's quota",
            validate=_lambda_concurrency,
            config_schema=PolicyConfigSchema(
                properties={
                    "accountConcurrency": {
                        "type": "integer",
                        "default": NEW_ACCOUNT_LAMBDA_CONCURRENCY,
                    }
                }
            ),
        ),
        StackValidationPolicy(
            name="database-backup-plan-in-production",
            description="Production databases are in an AWS Backup plan",
            validate=_backup_plan,
            config_schema=PRODUCTION_FLAG,
        ),
        _resource_policy(
            "no-public-database",
            "RDS instances are not publicly accessible",
            forbid_public_database,
        ),
        _resource_policy(
            "no-wildcard-iam-actions",
            "IAM policies name their actions",
            forbid_wildcard_iam_actions,
        ),
        _resource_policy(
            "log-retention", "Log groups set a retention period", require_log_retention
        ),
        ResourceValidationPolicy(
            name="deletion-protection-in-production",
            description="Databases and load balancers are deletion-protected in production",
            validate=_deletion_protection,
            config_schema=PRODUCTION_FLAG,
        ),
    ],
)
