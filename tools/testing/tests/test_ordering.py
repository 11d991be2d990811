"""`make test`'s order: tests that start stacks of their own first, then black-box tests, then
the rest (each group in collection order), so no long test ends the run alone."""

from dataclasses import dataclass
from typing import Any, cast

import pytest

from mailstack_testing.fixtures import pytest_collection_modifyitems


@dataclass
class FakeItem:
    name: str
    fixturenames: tuple[str, ...] = ()
    e2e: bool = False

    def get_closest_marker(self, name: str) -> object | None:
        return object() if name == "e2e" and self.e2e else None


def test_tests_starting_their_own_stack_go_first_then_black_box_tests_then_the_rest() -> None:
    items = [
        FakeItem("unit"),
        FakeItem("black_box", ("running_stack",), e2e=True),
        FakeItem("own_stack", ("stack_factory",), e2e=True),
        FakeItem("unit_2", ("database_url",)),
        FakeItem("module_stack", ("module_stack",), e2e=True),
        FakeItem("black_box_2", e2e=True),
    ]

    pytest_collection_modifyitems(cast(list[pytest.Item], cast(Any, items)))

    assert [item.name for item in items] == [
        "own_stack",
        "module_stack",
        "black_box",
        "black_box_2",
        "unit",
        "unit_2",
    ]
