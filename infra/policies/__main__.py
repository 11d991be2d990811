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
    Resource,
    forbid_public_database,
    forbid_wildcard_iam_actions,
    require_bucket_encryption,
    require_cache_encryption_in_transit,
    require_deletion_protection,
    require_encryption_at_rest,
    require_log_retention,
)

Rule = Callable[[Resource], list[str]]


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


def _bucket_encryption(args: StackValidationArgs, report_violation: ReportViolation) -> None:
    resources = [Resource(r.resource_type, r.name, r.props) for r in args.resources]
    for violation in require_bucket_encryption(resources):
        report_violation(violation, None)


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
        StackValidationPolicy(
            name="buckets-encrypted",
            description="Every S3 bucket has a server-side encryption configuration",
            validate=_bucket_encryption,
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
            config_schema=PolicyConfigSchema(
                properties={"production": {"type": "boolean", "default": False}}
            ),
        ),
    ],
)
