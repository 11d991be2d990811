"""The gateway's one middleware, plain ASGI (no per-request task or body copy): security
headers and RateLimit-* headers on every response, and the request-latency histogram."""

import time
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from mailstack_gateway.observability import REQUEST_SECONDS

# An API answers JSON to programs: nothing here should be framed, sniffed, cached or referred.
SECURITY_HEADERS: tuple[tuple[bytes, bytes], ...] = (
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
    (b"cache-control", b"no-store"),
    (b"cross-origin-resource-policy", b"same-origin"),
    (b"strict-transport-security", b"max-age=63072000; includeSubDomains"),
)
# The docs page loads Swagger UI's script and styles from its CDN; everything else loads nothing.
API_CSP = (b"content-security-policy", b"default-src 'none'; frame-ancestors 'none'")
DOCS_CSP = (
    b"content-security-policy",
    b"default-src 'none'; script-src 'self' 'unsafe-inline' https://cdn.jsdelivr.net; "
    b"style-src 'self' https://cdn.jsdelivr.net; "
    b"img-src 'self' data: https://fastapi.tiangolo.com; "
    b"connect-src 'self'; frame-ancestors 'none'",
)


class GatewayMiddleware:
    def __init__(self, app: ASGIApp, quota_state: str) -> None:
        self.app = app
        self.quota_state = quota_state

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def send_with_headers(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = list(message.get("headers", []))
                headers.extend(SECURITY_HEADERS)
                # A response with a policy of its own (the console's pages) keeps it.
                if not any(name.lower() == API_CSP[0] for name, _ in headers):
                    headers.append(DOCS_CSP if scope["path"] == "/docs" else API_CSP)
                quota: Any = scope.get("state", {}).get(self.quota_state)
                if quota is not None and not any(
                    name.lower() == b"ratelimit-limit" for name, _ in headers
                ):
                    headers.extend(
                        (name.lower().encode(), value.encode())
                        for name, value in quota.headers().items()
                    )
                message["headers"] = headers
            await send(message)

        try:
            await self.app(scope, receive, send_with_headers)
        finally:
            route = scope.get("route")
            REQUEST_SECONDS.labels(
                method=scope["method"],
                route=getattr(route, "path", "unmatched"),
                status=str(status),
            ).observe(time.perf_counter() - started)
