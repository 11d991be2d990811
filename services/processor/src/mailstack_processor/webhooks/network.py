"""The HTTP client of the dispatcher, which can only connect to allowed addresses (SSRF).

The check runs where the connection is made, on the addresses the name resolves to at that
moment, and the connection goes to the checked address itself: a name that resolved to a
public address when the endpoint was registered and resolves to 169.254.169.254 now (DNS
rebinding) is refused. TLS still verifies the certificate against the URL's host name (httpcore
takes the SNI name from the request, not from the address connected to). Proxies from the
environment are ignored and redirects are not followed, so neither can lead elsewhere.
"""

import asyncio
import socket
import typing

import httpcore
import httpx

from mailstack_core import webhooks as hooks


async def resolve(host: str, port: int) -> list[str]:
    loop = asyncio.get_running_loop()
    infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    # Keep the resolver's order (it prefers what this machine can reach), without repeats.
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


class GuardedNetworkBackend(httpcore.AsyncNetworkBackend):
    """Connects only to addresses `mailstack_core.webhooks.address_allowed` accepts."""

    def __init__(
        self,
        allowed: tuple[hooks.IPNetwork, ...],
        inner: httpcore.AsyncNetworkBackend | None = None,
    ) -> None:
        self._allowed = allowed
        self._inner = inner or httpcore.AnyIOBackend()

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,  # noqa: ASYNC109 - httpcore's interface
        local_address: str | None = None,
        socket_options: typing.Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        async with asyncio.timeout(timeout):
            addresses = await resolve(host, port)
        # Every address must pass, not just the one connected to: a name answering with a
        # public and a private address is refused whole.
        checked = [hooks.check_address(host, address, self._allowed) for address in addresses]
        if not checked:
            raise httpcore.ConnectError(f"{host} does not resolve")
        error: Exception | None = None
        for address in checked:
            try:
                return await self._inner.connect_tcp(
                    str(address), port, timeout, local_address, socket_options
                )
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as failed:
                error = failed
        assert error is not None
        raise error

    async def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,  # noqa: ASYNC109 - httpcore's interface
        socket_options: typing.Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        raise httpcore.ConnectError("unix sockets are never a webhook endpoint")

    async def sleep(self, seconds: float) -> None:
        await self._inner.sleep(seconds)


def guarded_client(
    allowed: tuple[hooks.IPNetwork, ...], max_connections: int, timeout_seconds: float
) -> httpx.AsyncClient:
    """An httpx client whose every connection goes through GuardedNetworkBackend."""
    transport = httpx.AsyncHTTPTransport(trust_env=False, retries=0)
    # httpx builds its connection pool without a way to pass a network backend: it is
    # replaced by an equal pool that has one.
    transport._pool = httpcore.AsyncConnectionPool(
        ssl_context=httpx.create_ssl_context(trust_env=False),
        max_connections=max_connections,
        max_keepalive_connections=max_connections,
        keepalive_expiry=30.0,
        retries=0,
        network_backend=GuardedNetworkBackend(allowed),
    )
    return httpx.AsyncClient(
        transport=transport,
        timeout=httpx.Timeout(timeout_seconds),
        follow_redirects=False,
        trust_env=False,
        headers={"user-agent": "mailstack-webhooks/1"},
    )
