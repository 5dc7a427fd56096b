from __future__ import annotations

import time

from actors.activations import Activations


def test_idle_activations_are_passivated_and_recent_ones_kept() -> None:
    acts = Activations(idle_after=0.05, capacity=10)
    acts.put(("k", "old"), 1)
    time.sleep(0.08)
    acts.put(("k", "new"), 2)
    assert acts.passivate_idle() == 1
    assert ("k", "old") not in acts and acts.get(("k", "new")) == 2


def test_capacity_evicts_least_recently_used() -> None:
    acts = Activations(capacity=2)
    acts.put(("k", "a"), 1)
    acts.put(("k", "b"), 2)
    acts.get(("k", "a"))
    acts.put(("k", "c"), 3)
    assert ("k", "b") not in acts and ("k", "a") in acts and ("k", "c") in acts
