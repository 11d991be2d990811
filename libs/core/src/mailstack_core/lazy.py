"""Values made on first use, once, even when threads ask for them together."""

import threading
from collections.abc import Callable
from typing import Generic, TypeVar

T = TypeVar("T")


class OnFirstUse(Generic[T]):
    """Calling it returns what `make()` returned on the first call; `make` runs once.

    For clients most processes never use: an S3 client costs about 6 MB of resident memory,
    and most emails carry no attachment."""

    def __init__(self, make: Callable[[], T]) -> None:
        self._make = make
        self._lock = threading.Lock()
        self._made: list[T] = []

    def __call__(self) -> T:
        if not self._made:
            with self._lock:
                if not self._made:
                    self._made.append(self._make())
        return self._made[0]
