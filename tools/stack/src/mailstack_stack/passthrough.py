"""Telemetry settings `make up` passes from the environment it runs in to the services: traces
(OTEL_*), error reports (SENTRY_*) and Datadog log ids (DD_LOGS_INJECTION), the same names the
services read (docs/operations.md). docker-compose.yml takes the same variables from the shell."""

from collections.abc import Mapping

SERVICES = ("gateway", "processor")
PREFIXES = ("OTEL_", "SENTRY_")
NAMES = ("DD_LOGS_INJECTION",)
# Each service names itself in its spans; one name for both would merge them.
NOT_PASSED = ("OTEL_SERVICE_NAME",)


def is_passed(name: str) -> bool:
    return (name.startswith(PREFIXES) or name in NAMES) and name not in NOT_PASSED


def telemetry_env(environ: Mapping[str, str]) -> dict[str, dict[str, str]]:
    """Extra environment per service: the telemetry variables set in `environ`."""
    passed = {name: value for name, value in environ.items() if is_passed(name)}
    return {service: dict(passed) for service in SERVICES} if passed else {}
