"""The credit budget: each POST holds its cost until its outcome commits or releases it, so
concurrent submissions never together overrun the cap."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from .._models import CREDITS_PER_GENERATION


class Reservation:
    """Credits held for one POST; see :meth:`CreditBudget.reserve`."""

    __slots__ = ("_budget", "_cost", "_open")

    def __init__(self, budget: CreditBudget, cost: int) -> None:
        self._budget, self._cost, self._open = budget, cost, True

    def commit(self, *, certain: bool = True) -> None:
        """The POST created a task (``certain``) or may have (its answer was lost): spend it."""
        if self._open:
            self._open = False
            self._budget._settle(self._cost, spent=True, certain=certain)

    def release(self) -> None:
        """The POST started nothing: give the credits back."""
        if self._open:
            self._open = False
            self._budget._settle(self._cost, spent=False, certain=True)


class CreditBudget:
    """Credits spent and held against an optional cap.

    Args:
        max_credits: The cap; None for no cap (the counts are still kept).
    """

    def __init__(self, max_credits: int | None = None) -> None:
        if max_credits is not None and max_credits < 0:
            raise ValueError(f"max_credits must be >= 0, got {max_credits}")
        self.max_credits = max_credits
        self._spent = 0
        self._uncertain = 0
        self._held = 0

    @property
    def spent(self) -> int:
        """Credits spent: tasks created, plus POSTs whose outcome is unknown (maybe paid)."""
        return self._spent + self._uncertain

    @property
    def uncertain(self) -> int:
        """Of :attr:`spent`, the credits of POSTs whose answer was lost: maybe not charged."""
        return self._uncertain

    @property
    def committed(self) -> int:
        """Spent plus held for POSTs under way: what a new job must fit beside."""
        return self.spent + self._held

    def can_afford(self, jobs: int = 1, *, cost: int = CREDITS_PER_GENERATION) -> bool:
        """Whether ``jobs`` more generations fit in the budget beside what is committed."""
        if self.max_credits is None:
            return True
        return self.committed + jobs * cost <= self.max_credits

    def refund(self, credits: int) -> None:
        """The provider's ``consumed_credits`` say a task cost ``credits`` less than counted."""
        self._spent -= credits

    def adopt(self, credits: int) -> None:
        """Count credits an earlier run spent on a job this run takes over (from a journal)."""
        self._spent += credits

    @contextmanager
    def reserve(self, cost: int = CREDITS_PER_GENERATION) -> Iterator[Reservation]:
        """Hold ``cost`` for one POST (released on leaving unless committed); never refuses:
        check :meth:`can_afford` first."""
        self._held += cost
        reservation = Reservation(self, cost)
        try:
            yield reservation
        finally:
            reservation.release()

    def _settle(self, cost: int, *, spent: bool, certain: bool) -> None:
        self._held -= cost
        if spent and certain:
            self._spent += cost
        elif spent:
            self._uncertain += cost
