"""Admission control: the request bodies a service holds at once, bounded.

Each request holds its body from the first byte read until its answer is sent (its images travel to a judge
replica and wait there for their batch). A request that would take the total past the budget is refused
with 503 and ``Retry-After`` instead of growing memory without bound: eight clients sending 60 MiB at once
cost at most the budget, not 480 MiB. The budget lives on one event loop, so it needs no lock.
"""

from __future__ import annotations

from .settings import RequestError

RETRY_AFTER_S = 1.0  # a full budget empties as the requests in it are answered: a second is a fair wait


class ByteBudget:
    """``limit`` bytes shared by every request in flight; ``hold()`` gives one request its share."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.used = 0

    def hold(self) -> Hold:
        return Hold(self)


class Hold:
    """One request's share of a budget: grown as its body arrives, given back when it is answered.
    A context manager, so a request that fails anywhere gives back what it held."""

    def __init__(self, budget: ByteBudget) -> None:
        self.budget = budget
        self.size = 0

    def grow_to(self, size: int) -> None:
        """Hold ``size`` bytes in all (nothing more when it holds that much already), or refuse with 503."""
        extra = size - self.size
        if extra <= 0:
            return
        if self.budget.used + extra > self.budget.limit:
            raise RequestError(
                503,
                f"the service holds as much request data as it may ({self.budget.limit} bytes "
                "in flight); retry shortly",
                retry_after=RETRY_AFTER_S,
            )
        self.budget.used += extra
        self.size = size

    def __enter__(self) -> Hold:
        return self

    def __exit__(self, *exc: object) -> None:
        self.budget.used -= self.size
        self.size = 0
