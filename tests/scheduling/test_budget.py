"""The credit budget: a hold per POST, committed or released, never lost."""

from __future__ import annotations

import pytest

from grok_imagine_async import ConfigurationError
from grok_imagine_async._scheduling.books import CreditBudget


def test_a_hold_counts_until_committed_or_released() -> None:
    budget = CreditBudget(100)
    assert budget.can_afford(2) and not budget.can_afford(3)
    with budget.reserve(40) as first:
        assert (budget.committed, budget.spent) == (40, 0)
        assert budget.can_afford(1) and not budget.can_afford(2)
        first.commit()
    with budget.reserve(40):
        pass  # nothing committed: released on leaving
    assert (budget.committed, budget.spent, budget.uncertain) == (40, 40, 0)


def test_an_error_inside_releases_the_hold() -> None:
    budget = CreditBudget(80)
    with pytest.raises(RuntimeError), budget.reserve(40):
        raise RuntimeError("refused")
    assert budget.committed == 0


def test_a_lost_answer_is_spent_but_uncertain() -> None:
    budget = CreditBudget(None)
    with budget.reserve(40) as held:
        held.commit(certain=False)
        held.release()  # settled once: a later release changes nothing
    budget.count(80)
    assert (budget.spent, budget.uncertain, budget.committed) == (120, 40, 120)
    assert budget.can_afford(10**6)


def test_a_negative_cap_is_refused() -> None:
    with pytest.raises(ConfigurationError, match="max_credits"):
        CreditBudget(-1)
