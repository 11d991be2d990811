"""The contract suite stays black-box: it reaches the system only through HTTP, AWS APIs and SQL."""

import ast
from pathlib import Path

# Only the dev tools (stack launcher, stub control client); never the system's own code.
FORBIDDEN = (
    "mailstack_core",
    "mailstack_gateway",
    "mailstack_processor",
    "mailstack_jobs",
    "mailstack_infra",
)


def _imported_modules(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


def test_no_contract_test_imports_service_or_library_code() -> None:
    offenders = {
        f"{path.name}: {module}"
        for path in Path(__file__).parent.glob("*.py")
        for module in _imported_modules(path)
        if module.split(".")[0] in FORBIDDEN
    }
    assert offenders == set()
