import gc

import pytest

from mailstack_core.heap import freeze_startup_heap


@pytest.mark.usefixtures("unfrozen_heap")
def test_start_up_objects_move_where_full_collections_do_not_scan() -> None:
    assert gc.get_freeze_count() == 0
    frozen = freeze_startup_heap()
    assert frozen == gc.get_freeze_count() > 1000  # at least the modules pytest loaded
    # A full collection now scans only what was allocated since (nothing is in generation 2).
    assert len(gc.get_objects(generation=2)) < frozen / 10
