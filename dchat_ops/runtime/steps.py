"""Named, timed steps of a change: what ran, how long each took, and which one was running when it failed.

>>> steps = Steps()
>>> steps.run("render and check config", render_node, store, "b")
>>> await steps.arun("confirm on peers", check.settle, 0.5)
>>> steps.steps          # [("render and check config", 41.2), ("confirm on peers", 63.0)]
>>> steps.current        # the step that raised, for the error message
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

__all__ = ["Steps"]

_T = TypeVar("_T")


class Steps:
    """The steps of one change, in order, each with its time in milliseconds."""

    def __init__(self) -> None:
        self.steps: list[tuple[str, float]] = []
        self.current = ""

    def run(self, name: str, fn, *args, **kw):
        self.current = name
        t0 = time.perf_counter()
        out = fn(*args, **kw)
        self.steps.append((name, (time.perf_counter() - t0) * 1000))
        return out

    async def arun(self, name: str, fn: Callable[..., Awaitable[_T]], *args, **kw) -> _T:
        self.current = name
        t0 = time.perf_counter()
        out = await fn(*args, **kw)
        self.steps.append((name, (time.perf_counter() - t0) * 1000))
        return out
