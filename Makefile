# mailstack: `make up` runs the system on this machine, `make test` runs every test.
SHELL := /bin/bash
.DEFAULT_GOAL := help

UV_VERSION := 0.13.8
UV := $(shell command -v uv 2>/dev/null || echo python3 -m uv)
# Use the machine's Python; never download an interpreter.
export UV_PYTHON_DOWNLOADS := never

# STACK=auto|docker|host for up/down/status; STACK=auto|docker|host|external for test-contract
# (external: the stack .stack/stack.env describes, e.g. one `make up` started).
STACK ?=
STACK_ARGS = $(if $(STACK),--stack=$(STACK))
PROFILE ?=

PACKAGES := mailstack_core mailstack_gateway mailstack_processor mailstack_jobs mailstack_stubs mailstack_stack mailstack_testing mailstack_bench mailstack_cli mailstack_infra
PYTEST_ARGS ?=

.PHONY: help
help: ## List the targets
	@grep -E '^[a-zA-Z_-]+:.*?## ' $(MAKEFILE_LIST) | sort | awk 'BEGIN {FS = ":.*?## "}; {printf "  \033[36m%-16s\033[0m %s\n", $$1, $$2}'

.PHONY: uv
uv: ## Install uv if it is missing
	@$(UV) --version >/dev/null 2>&1 || python3 -m pip install --quiet "uv==$(UV_VERSION)"

.PHONY: sync
sync: uv ## Install the workspace with the locked versions (uv.lock)
	@$(UV) sync --frozen --quiet

.PHONY: up
up: sync ## Start the system: docker compose if a Docker engine answers, else host processes (STACK=docker|host forces one; PROFILE=contract-tests)
	$(UV) run --frozen mailstack-stack up $(STACK_ARGS) $(if $(PROFILE),--profile=$(PROFILE))

.PHONY: down
down: sync ## Stop the stack `make up` started, whichever kind it is (.stack/mode)
	$(UV) run --frozen mailstack-stack down $(STACK_ARGS)

.PHONY: status
status: sync ## Show which parts of the local stack run
	$(UV) run --frozen mailstack-stack status $(STACK_ARGS)

TENANT ?=

.PHONY: api-key
api-key: sync ## Print a new sending+reading API key for TENANT=<name> (created if needed), alone on the last line
	@$(UV) run --frozen mailstack-stack api-key --tenant "$(TENANT)"

.PHONY: token
token: sync ## Print a JWT for TENANT=<name> from the local development issuer (sending+reading)
	@$(UV) run --frozen mailstack-stack token --tenant "$(TENANT)"

.PHONY: browser
browser: ## Install Debian's chromium for the console's browser test, if /usr/bin/chromium is missing (root or sudo)
	@bash tools/install-chromium.sh

.PHONY: test
test: sync ## Run every test in one pytest run on 2 xdist workers (a test file stays on one worker)
	@status=0; \
	bash tools/install-chromium.sh || status=$$?; \
	$(UV) run --frozen pytest -n 2 --dist loadfile --no-loadscope-reorder --durations=15 \
		$(PYTEST_ARGS) || { code=$$?; [ $$status -ne 0 ] || status=$$code; }; \
	exit $$status

.PHONY: test-unit
test-unit: sync ## Run only the tests that need no database or LocalStack
	$(UV) run --frozen pytest -m "not integration and not e2e" -n 2 $(PYTEST_ARGS)

.PHONY: test-contract
test-contract: sync browser ## Run the black-box contract suite (STACK=external: against the running stack)
	$(UV) run --frozen pytest contract-tests $(STACK_ARGS) --durations=15 $(PYTEST_ARGS)

.PHONY: lint
lint: sync ## ruff, ruff format --check, mypy --strict, import-boundary contracts
	$(UV) run --frozen ruff check .
	$(UV) run --frozen ruff format --check .
	$(UV) run --frozen mypy $(addprefix -p ,$(PACKAGES))
	$(UV) run --frozen mypy localstack/bootstrap.py
	$(UV) run --frozen lint-imports

.PHONY: fmt
fmt: sync ## Format and autofix
	$(UV) run --frozen ruff format .
	$(UV) run --frozen ruff check --fix .

.PHONY: dashboards
dashboards: sync ## Regenerate the Grafana dashboard and the metrics table of docs/operations.md from mailstack_core.metrics
	$(UV) run --frozen python -m mailstack_core.dashboards dashboards/grafana/mailstack.json docs/operations.md

BENCH_ARGS ?=

# py-spy profiles of the gateway's intake and the processor's drain (BENCH_PROFILE= for none).
BENCH_PROFILE ?= .stack/profile

.PHONY: bench
bench: sync ## Measure a private stack with wrk: intake, delivery, stop time, memory, against same-run baselines
	@mkdir -p .stack
	$(UV) run --frozen python -m mailstack_bench.bench --output .stack/bench.json \
		$(if $(BENCH_PROFILE),--profile $(BENCH_PROFILE)) $(BENCH_ARGS)

.PHONY: jobs-package
jobs-package: sync ## Build build/jobs.zip, the Lambda bundle of the cleanup and retry jobs
	$(UV) run --frozen python services/jobs/package.py

.PHONY: clean
clean: down ## Stop the stack and remove its state (.stack/)
	rm -rf .stack
