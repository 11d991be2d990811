"""The gateway's JWT and rate-limit settings: validated from stack config, passed as its env."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pulumi
import pytest

from mailstack_infra.mocks import StackRecord
from mailstack_infra.settings import (
    ConfigError,
    JwtSettings,
    RateLimitSettings,
    StackConfig,
    load_resource_settings,
    load_stack_config,
)

RESOURCES_FILE = Path(__file__).resolve().parents[2] / "config" / "resources.json"
TASK = "aws:ecs/taskDefinition:TaskDefinition"
ISSUER = "https://login.example.com/"
JWKS_URL = "https://login.example.com/.well-known/jwks.json"
PUBLIC_KEY = "-----BEGIN PUBLIC KEY-----\nMFkw...\n-----END PUBLIC KEY-----\n"


def gateway_environment(stack: StackRecord) -> dict[str, str]:
    (definition,) = stack.one(TASK, "gateway-task").json("containerDefinitions")
    return {e["name"]: e["value"] for e in definition["environment"]}


def load(values: dict[str, Any]) -> StackConfig:
    pulumi.runtime.set_all_config(
        {
            key: value if isinstance(value, str) else json.dumps(value)
            for key, value in {
                "mailstack:owner": "platform-team",
                "mailstack:elasticEmailApiKey": "ee",
                "mailstack:sendGridApiKey": "sg",
                **values,
            }.items()
        }
    )
    return load_stack_config(
        pulumi.Config("mailstack"),
        project="mailstack",
        stack="dev",
        region="eu-west-1",
        resources=load_resource_settings(RESOURCES_FILE),
    )


@pytest.mark.parametrize("fixture", ["dev", "prod"])
def test_gateway_gets_no_jwt_variables_when_no_issuer_is_configured(
    fixture: str, request: pytest.FixtureRequest
) -> None:
    environment = gateway_environment(request.getfixturevalue(fixture))
    assert not [name for name in environment if name.startswith("JWT_")]


def test_gateway_gets_the_configured_jwt_variables(dev_with_jwt: StackRecord) -> None:
    environment = gateway_environment(dev_with_jwt)
    assert {k: v for k, v in environment.items() if k.startswith("JWT_")} == {
        "JWT_ISSUER": ISSUER,
        "JWT_AUDIENCE": "mailstack-api",
        "JWT_JWKS_URL": JWKS_URL,
        "JWT_ALGORITHMS": "RS256",
        "JWT_TENANT_CLAIM": "org",
        "JWT_SCOPE_CLAIM": "scope",
    }


def test_gateway_gets_the_default_rate_limits(dev: StackRecord) -> None:
    environment = gateway_environment(dev)
    assert environment["RATE_LIMIT_SEND_PER_MINUTE"] == "600"
    assert environment["RATE_LIMIT_READ_PER_MINUTE"] == "1200"
    assert environment["AUTH_CACHE_SECONDS"] == "10"
    assert environment["API_KEY_LAST_USED_FLUSH_SECONDS"] == "60"


def test_gateway_gets_the_configured_rate_limits(dev_with_jwt: StackRecord) -> None:
    environment = gateway_environment(dev_with_jwt)
    assert environment["RATE_LIMIT_SEND_PER_MINUTE"] == "120"
    assert environment["RATE_LIMIT_READ_PER_MINUTE"] == "240"
    assert environment["AUTH_CACHE_SECONDS"] == "5"
    assert environment["API_KEY_LAST_USED_FLUSH_SECONDS"] == "30"


def test_jwt_config_loads_from_stack_config_with_a_public_key() -> None:
    config = load(
        {
            "mailstack:jwtIssuer": ISSUER,
            "mailstack:jwtAudience": "mailstack-api",
            "mailstack:jwtPublicKey": PUBLIC_KEY,
            "mailstack:jwtAlgorithms": "ES256, EdDSA",
        }
    )
    assert config.jwt == JwtSettings(
        issuer=ISSUER,
        audience="mailstack-api",
        public_key=PUBLIC_KEY,
        algorithms=("ES256", "EdDSA"),
    )


def test_rate_limits_load_from_stack_config() -> None:
    config = load({"mailstack:rateLimitSendPerMinute": "30", "mailstack:authCacheSeconds": "0"})
    assert config.rate_limits == RateLimitSettings(send_per_minute=30, auth_cache_seconds=0)
    assert config.jwt is None


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"mailstack:jwtJwksUrl": JWKS_URL}, "mailstack:jwtIssuer"),
        ({"mailstack:jwtIssuer": ISSUER, "mailstack:jwtJwksUrl": JWKS_URL}, "jwtAudience"),
        ({"mailstack:jwtIssuer": ISSUER, "mailstack:jwtAudience": "a"}, "exactly one of"),
        (
            {
                "mailstack:jwtIssuer": ISSUER,
                "mailstack:jwtAudience": "a",
                "mailstack:jwtJwksUrl": JWKS_URL,
                "mailstack:jwtPublicKey": PUBLIC_KEY,
            },
            "exactly one of",
        ),
        (
            {
                "mailstack:jwtIssuer": ISSUER,
                "mailstack:jwtAudience": "a",
                "mailstack:jwtJwksUrl": JWKS_URL,
                "mailstack:jwtAlgorithms": "RS256,HS256",
            },
            "asymmetric algorithms only .* not HS256",
        ),
        (
            {
                "mailstack:jwtIssuer": ISSUER,
                "mailstack:jwtAudience": "a",
                "mailstack:jwtJwksUrl": JWKS_URL,
                "mailstack:jwtAlgorithms": "none",
            },
            "not none",
        ),
        (
            {
                "mailstack:jwtIssuer": "http://dev-issuer:8103",
                "mailstack:jwtAudience": "mailstack-local",
                "mailstack:jwtJwksUrl": "http://dev-issuer:8103/.well-known/jwks.json",
            },
            "jwtIssuer must be an https:// URL",
        ),
        ({"mailstack:rateLimitSendPerMinute": "0"}, "rateLimitSendPerMinute"),
    ],
)
def test_bad_gateway_auth_config_fails_with_a_clear_error(
    values: dict[str, str], message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        load(values)


def test_an_http_jwks_url_is_refused_for_a_deployment() -> None:
    jwt = JwtSettings(issuer=ISSUER, audience="a", jwks_url="http://login.example.com/jwks")
    with pytest.raises(ConfigError, match="jwtJwksUrl must be an https:// URL"):
        StackConfig(
            project="mailstack",
            stack="dev",
            owner="platform-team",
            region="eu-west-1",
            resources=load_resource_settings(RESOURCES_FILE),
            jwt=jwt,
            elasticemail_api_key="ee",
            sendgrid_api_key="sg",
        )
