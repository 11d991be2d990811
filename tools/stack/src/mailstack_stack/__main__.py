"""`mailstack-stack up|down|status`: the local stack behind `make up` and `make down`.

`--stack=docker` runs docker-compose.yml, `--stack=host` runs host processes, `--stack=auto`
(the default) the stack already up, else docker when a Docker engine answers, else host.
"""

from __future__ import annotations

import argparse
import logging
import os
import re
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from mailstack_stack.compose import ComposeStack
from mailstack_stack.config import Ports, StackConfig, find_repo_root
from mailstack_stack.credentials import issuer_token, new_tenant_key
from mailstack_stack.localstack import DEFAULT_SERVICES
from mailstack_stack.modes import (
    MODE_ENV,
    StackMode,
    docker_daemon_answers,
    forget_mode,
    parse_mode,
    record_mode,
    recorded_mode,
    resolve_mode,
)
from mailstack_stack.passthrough import telemetry_env
from mailstack_stack.profiles import DEFAULT, PROFILES, merge_env, profile_env
from mailstack_stack.stack import ComponentStatus, Stack, StackUrls, read_env_file

LAUNCHER_MODES = (StackMode.AUTO, StackMode.DOCKER, StackMode.HOST)
# --<flag> for each field of Ports; the private cluster's is used only when no other Postgres
# is found.
PORT_FLAGS = {
    "gateway-port": "gateway",
    "elasticemail-port": "elasticemail_stub",
    "sendgrid-port": "sendgrid_stub",
    "dev-issuer-port": "dev_issuer",
    "processor-health-port": "processor_health",
    "localstack-port": "localstack",
    "postgres-port": "private_postgres",
}
TENANT_PATTERN = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}$")


class StackModeConflictError(RuntimeError):
    """`up` was asked for one kind of stack while another kind is up."""


CURL_EXAMPLE = """\
Send an email (API_KEY, a development key with every scope, is in {env_file}):
  source {env_file}
  curl -sS -X POST {gateway}/v1/emails -H "Authorization: Bearer $API_KEY" \\
    -H 'content-type: application/json' \\
    -d '{{"from":{{"email":"app@example.com"}},"to":[{{"email":"user@example.com"}}],\
"subject":"Hello","text":"Hi there"}}'
Then follow it (with the id from the answer):
  curl -sS -H "Authorization: Bearer $API_KEY" {gateway}/v1/emails/<id>/history
"""
# Printed as where to find them, never as values: terminals and CI logs keep what they show.
SECRET_KEYS = ("API_KEY", "ELASTICEMAIL_API_KEY", "SENDGRID_API_KEY")


def parse_extra_env(items: Sequence[str]) -> dict[str, dict[str, str]]:
    """`component:KEY=value` items, e.g. `processor:RETRY_BACKOFF_BASE_SECONDS=0.2`."""
    extra: dict[str, dict[str, str]] = {}
    for item in items:
        component, colon, assignment = item.partition(":")
        key, equals, value = assignment.partition("=")
        if not (colon and equals and key):
            raise argparse.ArgumentTypeError(f"expected component:KEY=value, got {item!r}")
        extra.setdefault(component, {})[key] = value
    return extra


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mailstack-stack", description=__doc__)
    parser.add_argument(
        "command",
        choices=("up", "down", "status", "api-key", "token"),
        help="api-key: a new sending+reading key for --tenant (created if needed); "
        "token: a JWT for --tenant from the development issuer",
    )
    parser.add_argument("--tenant", help="for api-key and token")
    parser.add_argument(
        "--stack",
        type=lambda value: parse_mode(value, LAUNCHER_MODES),
        default=None,
        help=f"auto|docker|host (default: ${MODE_ENV} or auto)",
    )
    parser.add_argument(
        "--profile",
        choices=tuple(PROFILES),
        default=DEFAULT,
        help="extra settings for the components; `contract-tests` runs the processor as the "
        "contract suite's own stack does (default: %(default)s)",
    )
    parser.add_argument("--state-dir", type=Path, help="default: <repo>/.stack")
    for flag, field_name in PORT_FLAGS.items():
        parser.add_argument(
            f"--{flag}", type=int, dest=field_name, default=getattr(Ports, field_name)
        )
    parser.add_argument(
        "--localstack-services",
        default=",".join(DEFAULT_SERVICES),
        help="comma-separated LocalStack services (default: %(default)s)",
    )
    parser.add_argument(
        "--env",
        action="append",
        default=[],
        metavar="COMPONENT:KEY=VALUE",
        help="extra environment for one component; repeatable",
    )
    return parser


def _repo_root() -> Path:
    try:
        return find_repo_root(Path.cwd())
    except FileNotFoundError:
        return find_repo_root()


def config_from_args(args: argparse.Namespace) -> StackConfig:
    root = _repo_root()
    ports = Ports(**{name: getattr(args, name) for name in PORT_FLAGS.values()})
    return StackConfig(
        repo_root=root,
        state_dir=(args.state_dir or root / ".stack").resolve(),
        ports=ports,
        database_url=os.environ.get("DATABASE_URL") or None,
        localstack_services=tuple(s for s in args.localstack_services.split(",") if s),
        extra_env=merge_env(
            telemetry_env(os.environ), profile_env(args.profile), parse_extra_env(args.env)
        ),
        profile=args.profile,
    )


def print_urls(urls: StackUrls, env_file: Path) -> None:
    out = sys.stdout
    out.write("\nmailstack is up:\n")
    for key, value in urls.as_env().items():
        shown = f"(in {env_file.name})" if key in SECRET_KEYS else value
        out.write(f"  {key}={shown}\n")
    out.write(f"(all in {env_file})\n\n")
    out.write(CURL_EXAMPLE.format(gateway=urls.gateway_url, env_file=env_file))


def issue_credential(command: str, tenant: str | None, env_file: Path) -> int:
    """`api-key` / `token` for a tenant of the running stack; the credential alone on the last
    line of standard output."""
    if not tenant or not TENANT_PATTERN.match(tenant):
        sys.stderr.write(
            f"mailstack-stack {command}: give --tenant (TENANT=...), lowercase letters, digits "
            "and dashes\n"
        )
        return 2
    if not env_file.is_file():
        sys.stderr.write(f"mailstack-stack {command}: no {env_file}; run `make up` first\n")
        return 1
    values = read_env_file(env_file)
    try:
        if command == "api-key":
            credential = new_tenant_key(values["DATABASE_URL"], tenant)
        else:
            credential = issuer_token(values["DATABASE_URL"], values["DEV_ISSUER_URL"], tenant)
    except Exception as error:  # one clear line for `make api-key` / `make token`
        sys.stderr.write(f"mailstack-stack {command} failed: {type(error).__name__}: {error}\n")
        return 1
    sys.stdout.write(f"{credential}\n")
    return 0


def choose_mode(
    command: str, requested: StackMode, recorded: StackMode | None, daemon_answers: Any
) -> StackMode:
    """`up` may not start one kind of stack beside another; down/status follow what is up."""
    if command != "up":
        if requested is StackMode.AUTO:
            return recorded or StackMode.HOST
        return requested
    mode = resolve_mode(requested, daemon_answers, recorded)
    if recorded is not None and recorded is not mode:
        raise StackModeConflictError(
            f"a {recorded.value} stack is up (see .stack/mode); run `make down` first"
        )
    return mode


def print_status(components: Sequence[ComponentStatus], mode: StackMode) -> None:
    sys.stdout.write(f"stack: {mode.value}\n")
    for component in components:
        state = "healthy" if component.healthy else "down"
        pid = f" pid={component.pid}" if component.pid else ""
        sys.stdout.write(f"{component.name:<18} {state}{pid}\n")


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    logging.getLogger("httpx").setLevel(logging.WARNING)
    config = config_from_args(args)
    if args.command in ("api-key", "token"):
        return issue_credential(args.command, args.tenant, config.env_file)
    requested = args.stack or parse_mode(os.environ.get(MODE_ENV) or "auto", LAUNCHER_MODES)
    try:
        mode = choose_mode(
            args.command, requested, recorded_mode(config.state_dir), docker_daemon_answers
        )
    except StackModeConflictError as error:
        sys.stderr.write(f"mailstack-stack {args.command}: {error}\n")
        return 1
    stack: Stack | ComposeStack = (
        ComposeStack(config) if mode is StackMode.DOCKER else Stack(config)
    )
    if args.command == "up":
        try:
            if isinstance(stack, ComposeStack):
                stack.preflight()
            # Recorded before starting, so that `down` cleans up after a start that failed.
            record_mode(config.state_dir, mode)
            urls = stack.up()
        except Exception as error:  # one clear line for `make up`
            sys.stderr.write(f"mailstack-stack up ({mode.value}) failed: {error}\n")
            return 1
        sys.stdout.write(f"\nstack: {mode.value} (profile {config.profile})")
        print_urls(urls, config.env_file)
    elif args.command == "down":
        try:
            stopped = stack.down()
        except Exception as error:
            sys.stderr.write(f"mailstack-stack down ({mode.value}) failed: {error}\n")
            return 1
        forget_mode(config.state_dir)
        sys.stdout.write(f"stopped: {', '.join(stopped) or 'nothing was running'}\n")
    else:
        components = stack.status()
        print_status(components, mode)
        return 0 if all(component.healthy for component in components) else 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
