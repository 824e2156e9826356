"""Step-by-step progress lines for long sandbox operations (`[2] istiod-lite ... ok (0.3s)`).

Who calls it: `core.Sandbox.up`/`apply`. The sink is any `Callable[[str], None]` (the CLI passes
a printer, the API defaults to `quiet`). A failing step prints FAILED and lets the error pass.
"""

from __future__ import annotations

import time
from collections.abc import Callable

Progress = Callable[[str], None]


def quiet(_: str) -> None:
    """The default sink: print nothing."""


class Steps:
    """Numbers steps; `with steps("what"):` prints the start and the outcome with its time."""

    def __init__(self, progress: Progress) -> None:
        self.progress = progress
        self.n = 0

    def __call__(self, what: str) -> Step:
        self.n += 1
        return Step(self.progress, self.n, what)


class Step:
    def __init__(self, progress: Progress, n: int, what: str) -> None:
        self.progress, self.n, self.what = progress, n, what
        self.t0 = 0.0

    def __enter__(self) -> None:
        self.t0 = time.monotonic()
        self.progress(f"[{self.n}] {self.what} ...")

    def __exit__(self, typ: object, exc: object, tb: object) -> None:
        took = time.monotonic() - self.t0
        self.progress(f"[{self.n}] {self.what}: {'ok' if typ is None else 'FAILED'} "
                      f"({took:.1f}s)")
