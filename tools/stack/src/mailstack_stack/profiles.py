"""Named sets of extra settings a stack can be started with (`mailstack-stack up --profile`)."""

PROFILE_KEY = "STACK_PROFILE"
DEFAULT = "default"
CONTRACT_TESTS = "contract-tests"

# What the contract suite's own stack runs with, so that the suite can run against a stack
# started by `make up PROFILE=contract-tests` and get the verdict it gets on its private stack.
PROFILES: dict[str, dict[str, dict[str, str]]] = {
    DEFAULT: {},
    CONTRACT_TESTS: {
        "processor": {
            # The all-providers-down path ends in seconds, not minutes.
            "RETRY_BACKOFF_BASE_SECONDS": "0.2",
            "RETRY_BACKOFF_MAX_SECONDS": "2",
            "RECEIVE_WAIT_SECONDS": "1",
            # The dead-letter watcher would hide DLQ messages from the tests that look for
            # them; it has its own test on its own stack.
            "EMAIL_DLQ_URL": "",
            # The breaker has its own test on its own stack; here it must not carry one test's
            # provider failures into the next.
            "BREAKER_FAILURE_THRESHOLD": "1000",
        },
        "gateway": {
            # The suite polls and posts far faster than a client would; the rate-limit test
            # gives its own tenant a small limit of its own.
            "RATE_LIMIT_SEND_PER_MINUTE": "100000",
            "RATE_LIMIT_READ_PER_MINUTE": "100000",
        },
    },
}


def profile_env(name: str) -> dict[str, dict[str, str]]:
    """A copy of the profile's extra environment, per component (KeyError if unknown)."""
    return {component: dict(values) for component, values in PROFILES[name].items()}
