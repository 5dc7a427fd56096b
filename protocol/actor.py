"""Messages every actor kind understands, whatever its table.

`actor.state_timeout` is what a state's declared timeout delivers (actors/table.py): the actor
was still in `state` when the timer fired. It is the only timer message of the tables: a kind
declares what happens when each of its transitional states lasts too long, and the runtime's
tables set, replace and cancel the timer as the actor enters and leaves those states.
"""

from __future__ import annotations

from protocol.message import Message

# The name of the durable timer (a `timers` row) that carries a state's timeout.
STATE_TIMER = "state"


class StateTimeout(Message, frozen=True):
    TYPE = "actor.state_timeout"
    state: str
