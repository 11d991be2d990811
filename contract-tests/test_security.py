"""Security through the running stack: credentials, tenants, rate limits in Redis, and no
secret in any log."""

import os
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest

from email_flows import SENT_OR_LATER, an_email, submit, wait_for_final
from mailstack_testing.external import ExternalStack
from mailstack_testing.waiting import eventually

pytestmark = pytest.mark.e2e


def _admin(stack: Any, *args: str) -> str:
    """`mailstack-admin` (the gateway's key command) against the stack's database."""
    if isinstance(stack, ExternalStack) and stack.get("DATABASE_URL") is None:
        pytest.skip("--stack=external without DATABASE_URL: keys cannot be made for the test")
    done = subprocess.run(
        [sys.executable, "-m", "mailstack_gateway.admin", *args],
        env={**os.environ, "DATABASE_URL": stack.database_url},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.splitlines()[-1]


def _tenant_key(stack: Any, *tenant_options: str) -> tuple[str, str]:
    tenant = f"t-{uuid.uuid4().hex[:12]}"
    _admin(stack, "tenants", "create", tenant, *tenant_options)
    return tenant, _admin(stack, "keys", "create", "--tenant", tenant, "--name", "contract")


def _client(stack: Any, token: str) -> httpx.Client:
    headers = {"Authorization": f"Bearer {token}"}
    return httpx.Client(base_url=stack.gateway_url, timeout=10, headers=headers)


def test_without_a_credential_only_healthz_answers(stack: Any) -> None:
    with httpx.Client(base_url=stack.gateway_url, timeout=10) as anonymous:
        assert anonymous.get("/healthz").status_code == 200
        for method, path in [
            ("POST", "/v1/emails"),
            ("GET", "/v1/emails"),
            ("GET", f"/v1/emails/{uuid.uuid4()}"),
            ("GET", "/readyz"),
            ("GET", "/metrics"),
            ("GET", "/docs"),
            ("GET", "/openapi.json"),
        ]:
            response = anonymous.request(method, path, json=an_email())
            assert response.status_code == 401, (method, path)
            assert response.headers["www-authenticate"].startswith("Bearer")


def test_a_tenant_never_sees_another_tenants_email(stack: Any, gateway: httpx.Client) -> None:
    _, key = _tenant_key(stack)
    email_id = submit(gateway)

    with _client(stack, key) as other:
        assert other.get(f"/v1/emails/{email_id}").status_code == 404
        assert other.get(f"/v1/emails/{email_id}/history").status_code == 404
        assert other.get("/v1/emails").json()["items"] == []
        own = submit(other)
        assert [item["id"] for item in other.get("/v1/emails").json()["items"]] == [own]
    assert gateway.get(f"/v1/emails/{own}").status_code == 404


def test_a_sending_key_without_admin_scope_is_403_on_operations(stack: Any) -> None:
    _, key = _tenant_key(stack)
    with _client(stack, key) as client:
        response = client.get("/metrics")
    assert response.status_code == 403
    assert 'scope="admin"' in response.headers["www-authenticate"]


def test_a_revoked_key_is_refused(stack: Any) -> None:
    _, key = _tenant_key(stack)
    with _client(stack, key) as client:
        assert client.get("/v1/emails").status_code == 200
        _admin(stack, "keys", "revoke", key.split("_")[1])
        # A verified key is trusted for AUTH_CACHE_SECONDS (10 s by default) before a re-read.
        refused = eventually(
            lambda: client.get("/v1/emails"),
            30,
            interval=0.5,
            until=lambda response: response.status_code == 401,
            what="the revoked key to be refused",
        )
    assert refused.json()["error"] == "unauthenticated"


def test_the_tenants_own_send_limit_is_counted_across_requests(stack: Any) -> None:
    _, key = _tenant_key(stack, "--send-per-minute", "2")
    with _client(stack, key) as client:
        answers = [client.post("/v1/emails", json=an_email()) for _ in range(3)]

    assert [answer.status_code for answer in answers] == [202, 202, 429]
    assert answers[0].headers["ratelimit-limit"] == "2"
    assert answers[1].headers["ratelimit-remaining"] == "0"
    assert 1 <= int(answers[2].headers["retry-after"]) <= 60


def test_a_jwt_from_the_development_issuer_sends_for_its_tenant(stack: Any) -> None:
    if isinstance(stack, ExternalStack) and stack.get("DEV_ISSUER_URL") is None:
        pytest.skip("--stack=external without DEV_ISSUER_URL: no issuer to ask for a token")
    tenant = f"t-{uuid.uuid4().hex[:12]}"
    _admin(stack, "tenants", "create", tenant)
    issued = httpx.post(
        f"{stack.dev_issuer_url}/oauth/token",
        data={"grant_type": "client_credentials", "client_id": tenant},
        timeout=10,
    )
    assert issued.status_code == 200, issued.text
    token = issued.json()["access_token"]

    with _client(stack, token) as client:
        email_id = submit(client)
        assert wait_for_final(client, email_id)["status"] in SENT_OR_LATER
    header, payload, signature = token.split(".")
    with _client(stack, f"{header}.{payload}.{signature[::-1]}") as forged:
        assert forged.get("/v1/emails").status_code == 401


def test_no_credential_or_provider_key_appears_in_any_log(stack: Any, api_key: str) -> None:
    if isinstance(stack, ExternalStack):
        pytest.skip("--stack=external: this run cannot read the stack's log files")
    _, key = _tenant_key(stack)
    with _client(stack, key) as client:
        email_id = submit(client)
        wait_for_final(client, email_id)
        client.get(f"/v1/emails/{email_id}/history")
    # The processor logs `delivery.sent` just after committing SENT: searched once it is there.
    processor_log = Path(stack.log_file("processor"))
    eventually(
        lambda: [
            line
            for line in processor_log.read_text(errors="replace").splitlines()
            if "delivery.sent" in line and email_id in line
        ],
        10,
        interval=0.1,
        what=f"the processor's delivery.sent line of {email_id}",
    )
    with _client(stack, key[:-2] + "xx") as wrong:
        assert wrong.get("/v1/emails").status_code == 401
    secrets = {
        "a tenant's key": key,
        "its secret part": key.split("_", 2)[2],
        "the development key": api_key,
        "ElasticEmail's key": "local-elasticemail-key",
        "SendGrid's key": "local-sendgrid-key",
    }
    logs = sorted(Path(stack.log_file("gateway")).parent.glob("*.log"))
    assert {path.stem for path in logs} >= {"gateway", "processor"}

    found = [
        f"{name} in {path.name}"
        for path in logs
        for name, secret in secrets.items()
        if secret in path.read_text(errors="replace")
    ]

    assert found == []
