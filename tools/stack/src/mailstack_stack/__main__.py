"""`mailstack-stack up|down|status|api-key|token`: the local stack behind `make up` and `make down`.

`--stack=docker` runs docker-compose.yml, `--stack=host` runs host processes, `--stack=auto`
(the default) the stack already up, else docker when a Docker engine answers, else host.
"""

import argparse
import logging
import os
import re
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from mailstack_core.tables import TENANT_ID_PATTERN
from mailstack_stack import credentials
from mailstack_stack.compose import ComposeStack
from mailstack_stack.config import (
    MACHINE_REDIS_URL,
    MODE_ENV,
    StackConfig,
    StackMode,
    docker_daemon_answers,
    find_repo_root,
    parse_mode,
    read_env_file,
    resolve_mode,
)
from mailstack_stack.passthrough import telemetry_env
from mailstack_stack.profiles import PROFILES, profile_env
from mailstack_stack.stack import Stack

LAUNCHER_MODES = (StackMode.AUTO, StackMode.DOCKER, StackMode.HOST)
TENANT = re.compile(TENANT_ID_PATTERN)


class StackModeConflictError(RuntimeError):
    """`up` was asked for one kind of stack while another kind is up."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mailstack-stack", description=__doc__)
    commands = ("up", "down", "status", "api-key", "token")
    parser.add_argument("command", choices=commands, help="api-key, token: for --tenant")
    parser.add_argument("--tenant", default="")
    modes = lambda value: parse_mode(value, LAUNCHER_MODES)  # noqa: E731
    parser.add_argument(
        "--stack", type=modes, help=f"auto|docker|host (default: ${MODE_ENV} or auto)"
    )
    parser.add_argument("--profile", choices=tuple(PROFILES), default="default")
    parser.add_argument("--state-dir", type=Path, help="default: <repo>/.stack")
    return parser


def choose_mode(
    command: str, requested: StackMode, recorded: StackMode | None, answers: Callable[[], bool]
) -> StackMode:
    """`up` may not start one kind of stack beside another; down/status follow what is up."""
    if command != "up":
        return (recorded or StackMode.HOST) if requested is StackMode.AUTO else requested
    mode = resolve_mode(requested, answers, recorded)
    if recorded not in (None, mode):
        raise StackModeConflictError(f"a {recorded} stack is up (.stack/mode); `make down` first")
    return mode


def say(line: str) -> None:
    sys.stdout.write(f"{line}\n")


def run(args: argparse.Namespace, config: StackConfig) -> int:
    if args.command in ("api-key", "token"):
        if not TENANT.fullmatch(args.tenant):
            raise ValueError("give --tenant (TENANT=...): lowercase letters, digits and dashes")
        env = read_env_file(config.env_file) if config.env_file.is_file() else {}
        if not env:
            raise FileNotFoundError(f"no {config.env_file}; run `make up` first")
        if args.command == "api-key":
            credential = credentials.new_tenant_key(env["DATABASE_URL"], args.tenant)
        else:
            credential = credentials.issuer_token(
                env["DATABASE_URL"], env["DEV_ISSUER_URL"], args.tenant
            )
        say(credential)  # alone on the last line, for `make api-key` / `make token`
        return 0
    mode_file = config.state_dir / "mode"
    recorded = parse_mode(mode_file.read_text(), LAUNCHER_MODES) if mode_file.is_file() else None
    requested = args.stack or parse_mode(os.environ.get(MODE_ENV) or "auto", LAUNCHER_MODES)
    mode = choose_mode(args.command, requested, recorded, docker_daemon_answers)
    stack = ComposeStack(config) if mode is StackMode.DOCKER else Stack(config)
    if args.command == "up":
        if isinstance(stack, ComposeStack):
            stack.preflight()
        # Recorded before starting, so that `down` cleans up after a start that failed.
        config.state_dir.mkdir(parents=True, exist_ok=True)
        mode_file.write_text(f"{mode}\n")
        stack.up()
        gateway = read_env_file(config.env_file)["GATEWAY_URL"]
        say(f"mailstack is up ({mode}, profile {config.profile}): the gateway on {gateway}")
        say(f"URLs and a development key (API_KEY): source {config.env_file}")
    elif args.command == "down":
        stopped = stack.down()
        mode_file.unlink(missing_ok=True)
        say(f"stopped: {', '.join(stopped) or 'nothing was running'}")
    else:
        components = stack.status()
        say(f"stack: {mode}")
        for name, pid, healthy in components:
            say(f"{name:<18} {'healthy' if healthy else 'down'}{f' pid={pid}' * bool(pid)}")
        return 0 if all(healthy for _, _, healthy in components) else 1
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    logging.getLogger("httpx").setLevel(logging.WARNING)
    try:
        root = find_repo_root(Path.cwd())
    except FileNotFoundError:
        root = find_repo_root()
    # The telemetry settings of this shell, then the profile's, for each component.
    telemetry, profile = telemetry_env(os.environ), profile_env(args.profile)
    extra_env = {
        name: telemetry.get(name, {}) | profile.get(name, {}) for name in {*telemetry, *profile}
    }
    config = StackConfig(
        repo_root=root,
        state_dir=(args.state_dir or root / ".stack").resolve(),
        database_url=os.environ.get("DATABASE_URL") or None,
        redis_url=os.environ.get("REDIS_URL") or MACHINE_REDIS_URL,
        extra_env=extra_env,
        profile=args.profile,
    )
    try:
        return run(args, config)
    except Exception as error:  # one clear line for `make up` and the others
        sys.stderr.write(f"mailstack-stack {args.command} failed: {error}\n")
        return 1


if __name__ == "__main__":
    sys.exit(main())
