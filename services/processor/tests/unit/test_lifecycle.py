"""How the processor and the webhook dispatcher start (mailstack_processor.lifecycle)."""

import asyncio
import gc
from collections.abc import Coroutine
from typing import Any

import pytest

from mailstack_core.telemetry import TelemetrySettings
from mailstack_processor import lifecycle


@pytest.mark.usefixtures("unfrozen_heap")
def test_the_heap_built_at_start_up_is_frozen_before_the_work_starts(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Full collections then skip the start-up objects (mailstack_core.heap)."""
    frozen_when_run: list[int] = []

    def run(main: Coroutine[Any, Any, None]) -> None:
        frozen_when_run.append(gc.get_freeze_count())
        main.close()

    async def serve(stop: asyncio.Event, tracer_provider: object) -> None:
        raise AssertionError("not run: uvloop.run is replaced")

    monkeypatch.setattr(lifecycle.uvloop, "run", run)
    monkeypatch.setattr(lifecycle, "configure_logging", lambda *args, **kwargs: None)
    assert gc.get_freeze_count() == 0
    lifecycle.run_service(
        TelemetrySettings(), "mailstack-processor", ("INFO", "json"), ("127.0.0.1", 0), serve
    )
    assert len(frozen_when_run) == 1
    assert frozen_when_run[0] > 10_000
