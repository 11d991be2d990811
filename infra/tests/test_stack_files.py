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


def stack_file(stack: str) -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((REPO_ROOT / f"Pulumi.{stack}.yaml").read_text())
    return dict(loaded["config"])


def load(stack: str, extra: dict[str, Any] | None = None) -> StackConfig:
    values = {**stack_file(stack), **(extra or {})}
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
    config = load("prod", {"mailstack:certificateArn": "arn:aws:acm:eu-west-1:1:certificate/x"})
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
    prod = load("prod", {"mailstack:certificateArn": "arn:aws:acm:eu-west-1:1:certificate/x"})
    assert prod.cache_multi_az is True
    assert prod.cache_node_count >= 2
    assert not prod.cache_node_type.startswith("cache.t")


def test_a_multi_az_cache_needs_a_replica() -> None:
    with pytest.raises(ConfigError, match="cacheNodeCount"):
        load("dev", {"mailstack:cacheMultiAz": "true", "mailstack:cacheNodeCount": "1"})


@pytest.mark.parametrize("stack", ["dev", "prod", "localstack"])
def test_no_stack_file_trusts_a_jwt_issuer_by_default(stack: str) -> None:
    extra = {"mailstack:certificateArn": "arn:aws:acm:eu-west-1:1:certificate/x"}
    assert load(stack, extra if stack == "prod" else None).jwt is None


def test_prod_refuses_to_start_without_a_certificate() -> None:
    with pytest.raises(ConfigError, match="certificateArn"):
        load("prod")


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
