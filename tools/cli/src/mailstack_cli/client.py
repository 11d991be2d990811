"""The gateway's HTTP API, one method per call the CLI makes; errors as exceptions."""

from typing import Any

import httpx

TIMEOUT_SECONDS = 15.0
Json = dict[str, Any]


class ApiError(Exception):
    """The gateway answered with an error: its status and its body (`errors` or `error`)."""

    def __init__(self, status: int, body: Any) -> None:
        super().__init__(f"HTTP {status}")
        self.status = status
        self.body = body


class GatewayUnreachableError(Exception):
    def __init__(self, url: str, error: Exception) -> None:
        super().__init__(f"the gateway at {url} did not answer: {error}")


class GatewayClient:
    def __init__(
        self, url: str, api_key: str, transport: httpx.BaseTransport | None = None
    ) -> None:
        self.url = url
        self._http = httpx.Client(
            base_url=url,
            headers={"Authorization": f"Bearer {api_key}", "User-Agent": "mailstack-cli"},
            timeout=TIMEOUT_SECONDS,
            transport=transport,
        )

    def close(self) -> None:
        self._http.close()

    def _call(self, method: str, path: str, **kwargs: Any) -> Json:
        try:
            response = self._http.request(method, path, **kwargs)
        except httpx.HTTPError as error:
            raise GatewayUnreachableError(self.url, error) from error
        try:
            body = response.json()
        except ValueError:
            body = response.text
        if response.is_error:
            raise ApiError(response.status_code, body)
        if not isinstance(body, dict):
            raise ApiError(response.status_code, {"error": "unexpected_body", "message": body})
        return body

    def send(self, email: Json, idempotency_key: str | None = None) -> Json:
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else {}
        return self._call("POST", "/v1/emails", json=email, headers=headers)

    def email(self, email_id: str) -> Json:
        return self._call("GET", f"/v1/emails/{email_id}")

    def history(self, email_id: str) -> Json:
        return self._call("GET", f"/v1/emails/{email_id}/history")

    def emails(
        self,
        status: str | None = None,
        tag: str | None = None,
        limit: int | None = None,
        cursor: str | None = None,
    ) -> Json:
        filters = {"status": status, "tag": tag, "limit": limit, "cursor": cursor}
        params = {name: value for name, value in filters.items() if value is not None}
        return self._call("GET", "/v1/emails", params=params)

    def create_key(self, request: Json) -> Json:
        return self._call("POST", "/v1/admin/keys", json=request)

    def keys(self, tenant: str | None = None) -> Json:
        return self._call("GET", "/v1/admin/keys", params={"tenant": tenant} if tenant else {})

    def revoke_key(self, key_id: str) -> Json:
        return self._call("POST", f"/v1/admin/keys/{key_id}/revoke")

    def breakers(self) -> Json:
        return self._call("GET", "/v1/admin/breakers")

    def dead_letters(self) -> Json:
        return self._call("GET", "/v1/admin/dead-letters")

    def redrive(self, max_messages_per_second: int | None = None) -> Json:
        body = {"max_messages_per_second": max_messages_per_second}
        return self._call("POST", "/v1/admin/dead-letters/redrive", json=body)
