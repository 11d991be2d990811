"""`mailstack-stub elasticemail|sendgrid --host H --port P --api-key K`: run one stub server."""

import argparse
import os
import signal
import socket
from collections.abc import Sequence
from types import FrameType
from typing import Any

import uvicorn

from mailstack_stubs.app import PROVIDERS, create_app
from mailstack_stubs.behaviour import StubState

DEFAULT_PORTS = {"elasticemail": 8101, "sendgrid": 8102}
EVENTS_URL_ENV = "STUB_EVENTS_URL"
EVENTS_PRIVATE_KEY_ENV = "STUB_EVENTS_PRIVATE_KEY"


def log_config(level: str) -> dict[str, Any]:
    """Every log line, ours and uvicorn's, to stdout so a container's log driver gets it all."""
    handler = {"class": "logging.StreamHandler", "stream": "ext://sys.stdout", "formatter": "plain"}
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"}},
        "handlers": {"stdout": handler},
        "loggers": {
            name: {"handlers": ["stdout"], "level": level.upper(), "propagate": False}
            for name in ("mailstack_stubs", "uvicorn", "uvicorn.error", "uvicorn.access")
        },
    }


class StubServer(uvicorn.Server):
    """A uvicorn server that releases requests held by `hang` before draining connections."""

    def __init__(self, config: uvicorn.Config, state: StubState) -> None:
        super().__init__(config)
        self._state = state

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        # uvicorn waits for in-flight requests before the app's lifespan shutdown runs, so a
        # held request would keep SIGTERM waiting forever unless it is released first.
        self._state.close()
        await super().shutdown(sockets)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="mailstack-stub", description="Run a stub ElasticEmail v4 or SendGrid v3 server."
    )
    parser.add_argument("provider", choices=PROVIDERS)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, help="default: 8101 elasticemail, 8102 sendgrid")
    parser.add_argument("--api-key", required=True, help="the only key the stub accepts")
    parser.add_argument("--log-level", default="info", choices=["debug", "info", "warning"])
    parser.add_argument(
        "--events-url",
        default=os.environ.get(EVENTS_URL_ENV),
        help=f"where to post provider events after each send (default: ${EVENTS_URL_ENV}; "
        "unset: none are posted)",
    )
    parser.add_argument(
        "--events-private-key",
        default=os.environ.get(EVENTS_PRIVATE_KEY_ENV),
        help=f"sendgrid: the EC P-256 key that signs its events, PEM or base64 DER (default: "
        f"${EVENTS_PRIVATE_KEY_ENV})",
    )
    args = parser.parse_args(argv)
    if not args.api_key:
        parser.error("--api-key must not be empty")
    return args


def _exit_cleanly(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(0)


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    # uvicorn re-raises the SIGTERM it handled once it has shut down; finishing the shutdown
    # we were asked for is a success, so the process says so with exit status 0.
    signal.signal(signal.SIGTERM, _exit_cleanly)
    state = StubState()
    config = uvicorn.Config(
        create_app(
            args.provider,
            args.api_key,
            state,
            events_url=args.events_url,
            events_private_key=args.events_private_key,
        ),
        host=args.host,
        port=args.port or DEFAULT_PORTS[args.provider],
        log_config=log_config(args.log_level),
        # Each send already logs one `stub.send` line with more in it; a second, uvicorn's,
        # per request cost the stack's harness a share of every email's CPU under load.
        access_log=args.log_level == "debug",
        # A backstop only: held requests are released at shutdown, so this rarely bites.
        timeout_graceful_shutdown=10,
    )
    StubServer(config, state).run()


if __name__ == "__main__":
    main()
