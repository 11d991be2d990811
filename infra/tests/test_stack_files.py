"""The Pulumi project and stack files load into valid configurations."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pulumi
import pytest
import yaml

from mailstack_infra.settings import (
    ConfigError,
    StackConfig,
    load_resource_settings,
    load_stack_config,
)

REPO_ROOT = Path(__file__).resolve().parents[2]
# What an operator sets before the first `pulumi up` (docs/deploy.md): never in the stack files.
OPERATOR = {
    "dev": {"mailstack:elasticEmailApiKey": "ee", "mailstack:sendGridApiKey": "sg"},
    "prod": {
        "mailstack:elasticEmailApiKey": "ee",
        "mailstack:sendGridApiKey": "sg",
        "mailstack:certificateArn": "arn:aws:acm:eu-west-1:1:certificate/x",
        "mailstack:alarmEmail": "oncall@example.com",
    },
    "localstack": {},
}


def stack_file(stack: str) -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((REPO_ROOT / f"Pulumi.{stack}.yaml").read_text())
    return dict(loaded["config"])


def load(
    stack: str, extra: dict[str, Any] | None = None, *, without: tuple[str, ...] = ()
) -> StackConfig:
    """The stack file with what the operator sets (less `without`) and `extra` on top."""
    values = {**stack_file(stack), **OPERATOR[stack], **(extra or {})}
    values = {key: value for key, value in values.items() if key not in without}
    pulumi.runtime.set_all_config(
        {
            key: value if isinstance(value, str) else json.dumps(value)
            for key, value in values.items()
        }
    )
    return load_stack_config(
        pulumi.Config("mailstack"),
        project="mailstack",
        stack=stack,
        region=str(values["aws:region"]),
        resources=load_resource_settings(REPO_ROOT / "config" / "resources.json"),
    )


def test_project_runs_the_program_in_infra_with_uv() -> None:
    project = yaml.safe_load((REPO_ROOT / "Pulumi.yaml").read_text())
    assert project["name"] == "mailstack"
    assert project["main"] == "infra/"
    assert project["runtime"]["name"] == "python"
    assert (REPO_ROOT / "infra" / "__main__.py").is_file()


def test_dev_stack_is_small_and_unprotected() -> None:
    config = load("dev")
    assert (config.az_count, config.nat_per_az, config.deletion_protection) == (2, False, False)
    assert config.db_replica_count == 0


def test_prod_stack_is_protected_redundant_and_replicated() -> None:
    config = load("prod")
    assert config.az_count == 3
    assert config.nat_per_az is True
    assert config.deletion_protection is True
    assert config.db_multi_az is True
    assert config.db_replica_count >= 1
    assert config.db_backup_retention_days >= 7
    assert config.gateway.min_tasks >= 2
    assert config.processor.max_tasks == 20


def test_dev_cache_is_one_small_node_and_prod_fails_over_across_zones() -> None:
    dev = load("dev")
    assert (dev.cache_node_count, dev.cache_multi_az) == (1, False)
    prod = load("prod")
    assert prod.cache_multi_az is True
    assert prod.cache_node_count >= 2
    assert not prod.cache_node_type.startswith("cache.t")


def test_a_multi_az_cache_needs_a_replica() -> None:
    with pytest.raises(ConfigError, match="cacheNodeCount"):
        load("dev", {"mailstack:cacheMultiAz": "true", "mailstack:cacheNodeCount": "1"})


@pytest.mark.parametrize("stack", ["dev", "prod", "localstack"])
def test_no_stack_file_trusts_a_jwt_issuer_by_default(stack: str) -> None:
    assert load(stack).jwt is None


def test_prod_refuses_to_start_without_a_certificate() -> None:
    with pytest.raises(ConfigError, match="certificateArn"):
        load("prod", without=("mailstack:certificateArn",))


def test_prod_refuses_to_start_without_an_alarm_email() -> None:
    with pytest.raises(ConfigError, match="mailstack:alarmEmail is required in production"):
        load("prod", without=("mailstack:alarmEmail",))


@pytest.mark.parametrize("stack", ["dev", "prod"])
@pytest.mark.parametrize("key", ["mailstack:elasticEmailApiKey", "mailstack:sendGridApiKey"])
def test_aws_stacks_refuse_to_start_without_both_provider_keys(stack: str, key: str) -> None:
    """The processor needs both; a secret without a value keeps every task from starting."""
    with pytest.raises(ConfigError, match=f"{key} must be set: pulumi config set --secret"):
        load(stack, without=(key,))


def test_localstack_needs_no_provider_keys() -> None:
    assert load("localstack").elasticemail_api_key is None


@pytest.mark.parametrize("stack", ["dev", "prod"])
def test_stack_files_start_in_bootstrap_mode_until_the_images_are_pushed(stack: str) -> None:
    assert stack_file(stack)["mailstack:imagesReady"] is False
    assert load(stack).images_ready is False
    assert load(stack, {"mailstack:imagesReady": "true"}).images_ready is True


def test_dev_tags_may_be_pushed_again_and_prod_tags_never() -> None:
    assert load("dev").mutable_image_tags == ("dev*",)
    assert load("prod").mutable_image_tags == ()


def test_prod_has_a_backup_plan_and_interface_endpoints_and_dev_neither() -> None:
    prod, dev = load("prod"), load("dev")
    assert (prod.db_backup_plan, prod.interface_endpoints) == (True, True)
    assert (dev.db_backup_plan, dev.interface_endpoints) == (False, False)


def test_jobs_reserve_no_concurrency_unless_configured() -> None:
    assert load("dev").jobs_reserved_concurrency is None
    assert load("dev", {"mailstack:jobsReservedConcurrency": "1"}).jobs_reserved_concurrency == 1


def test_an_unknown_task_architecture_is_refused() -> None:
    with pytest.raises(ConfigError, match="taskArchitecture"):
        load("dev", {"mailstack:taskArchitecture": "RISCV"})


def test_localstack_stack_targets_localstack_with_a_local_database() -> None:
    config = load("localstack")
    assert config.is_localstack
    assert config.local_database_url
    assert config.localstack_endpoint == "http://localhost:4566"


def test_jobs_archive_defaults_to_what_make_builds() -> None:
    assert load("dev").jobs_archive_path == "build/jobs.zip"


def test_secret_config_reaches_the_program_as_secrets() -> None:
    config = load("dev", {"mailstack:elasticEmailApiKey": "k"})
    assert isinstance(config.elasticemail_api_key, pulumi.Output)


def test_the_deploy_guide_builds_every_image_for_the_tasks_platform() -> None:
    """Tasks run X86_64: an image built on an ARM laptop without --platform will not start."""
    guide = (REPO_ROOT / "docs" / "deploy.md").read_text()
    builds = [line for line in guide.splitlines() if line.startswith("docker build")]
    assert len(builds) == 2
    assert all('--platform "$PLATFORM"' in line for line in builds)
    assert "PLATFORM=$(pulumi stack output image_platform)" in guide
    assert load("dev").platform == "linux/amd64"
    assert load("dev", {"mailstack:taskArchitecture": "ARM64"}).platform == "linux/arm64"


def test_provider_event_settings_are_optional_and_the_notification_secret_stays_secret() -> None:
    config = load("prod")
    assert config.sendgrid_event_webhook_public_key is None
    assert config.elasticemail_notification_secret is None
    configured = load(
        "prod",
        {
            "mailstack:sendGridEventWebhookPublicKey": "MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAE",
            "mailstack:elasticEmailNotificationSecret": "s3cret",
            "mailstack:providerEventMaxAgeSeconds": "600",
        },
    )
    assert configured.sendgrid_event_webhook_public_key == "MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAE"
    assert isinstance(configured.elasticemail_notification_secret, pulumi.Output)
    assert configured.provider_event_max_age_seconds == 600
    with pytest.raises(ConfigError, match="providerEventMaxAgeSeconds"):
        load("prod", {"mailstack:providerEventMaxAgeSeconds": "0"})


def test_webhook_event_retention_is_thirty_days_unless_configured() -> None:
    assert load("dev").webhook_event_retention_days == 30
    configured = load("dev", {"mailstack:webhookEventRetentionDays": "7"})
    assert configured.webhook_event_retention_days == 7
    with pytest.raises(ConfigError, match="webhookEventRetentionDays"):
        load("dev", {"mailstack:webhookEventRetentionDays": "0"})
