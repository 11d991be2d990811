"""The explicit AWS provider every resource uses: default tags, and LocalStack endpoints."""

from __future__ import annotations

import pulumi_aws as aws

from mailstack_infra.settings import StackConfig

# The AWS services the localstack stack declares resources in (or calls, for STS).
LOCALSTACK_SERVICES = (
    "cloudwatch",
    "cloudwatchevents",
    "cloudwatchlogs",
    "events",
    "iam",
    "kms",
    "lambda_",
    "logs",
    "s3",
    "secretsmanager",
    "sns",
    "sqs",
    "sts",
)
# LocalStack accepts any credentials; these are its documented test keys, not secrets.
LOCALSTACK_KEY = "test"


def default_tags(config: StackConfig) -> dict[str, str]:
    """The tags every taggable resource carries."""
    return {"project": config.project, "stack": config.stack, "owner": config.owner}


def aws_provider(config: StackConfig) -> aws.Provider:
    """An AWS provider for the stack's region, aimed at LocalStack for the localstack stack."""
    tags = aws.ProviderDefaultTagsArgs(tags=default_tags(config))
    if not config.is_localstack:
        return aws.Provider("aws", region=config.region, default_tags=tags)
    endpoint = config.localstack_endpoint
    return aws.Provider(
        "aws",
        region=config.region,
        default_tags=tags,
        access_key=LOCALSTACK_KEY,
        secret_key=LOCALSTACK_KEY,
        skip_credentials_validation=True,
        skip_requesting_account_id=True,
        skip_metadata_api_check=True,
        skip_region_validation=True,
        s3_use_path_style=True,
        endpoints=[
            aws.ProviderEndpointArgs(**{service: endpoint for service in LOCALSTACK_SERVICES})
        ],
    )
