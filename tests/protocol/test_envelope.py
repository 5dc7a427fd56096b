"""The wire format: round trips, and every defect caught at decode time with a reason."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from protocol import Envelope, Message, ProtocolError, Target, decode, encode, lookup
from protocol import compute as m
from protocol.power import PowerAction
from protocol.states import PowerState


class Ping(Message, frozen=True):
    TYPE = "test.ping"
    n: int
    note: str = ""


class PingV2(Message, frozen=True):
    TYPE = "test.ping"
    VERSION = 2
    n: int
    unit: str


def _wire(**changes: object) -> bytes:
    data = json.loads(encode(Envelope.new(Target("probe", "a"), Ping(n=1))))
    data.update(changes)
    return json.dumps(data).encode()


def test_round_trip_keeps_every_field() -> None:
    cause = Envelope.new(Target("probe", "x"), Ping(n=0))
    env = Envelope.new(Target("probe", "a"), Ping(n=3, note="<&>"), cause=cause, reply_to="q")
    back = decode(encode(env))
    assert back == env
    assert back.correlation_id == cause.correlation_id and back.causation_id == cause.id


def test_versions_are_distinct_types() -> None:
    assert lookup("test.ping", 1) is Ping and lookup("test.ping", 2) is PingV2
    env = Envelope.new(Target("probe", "a"), PingV2(n=1, unit="s"))
    assert env.version == 2 and decode(encode(env)).body == PingV2(n=1, unit="s")


@pytest.mark.parametrize(
    ("wire", "reason"),
    [
        (b"not json", "malformed envelope"),
        (b"[]", "malformed envelope"),
        (_wire(type="no.such"), "unknown message type 'no.such'"),
        (_wire(version=9), "unsupported version 9"),
        (_wire(body={"n": "one"}), "malformed body"),
        (_wire(body={"n": 1, "extra": True}), "unknown field"),
        (_wire(body={}), "missing required field"),
        (_wire(id="not-a-uuid"), "is not a UUID"),
        (_wire(target={"kind": "probe"}), "malformed envelope"),
    ],
)
def test_defects_raise_protocol_error_with_reason(wire: bytes, reason: str) -> None:
    with pytest.raises(ProtocolError) as err:
        decode(wire)
    assert reason in err.value.reason


def test_redefining_a_registered_type_is_refused() -> None:
    with pytest.raises(TypeError, match="already defined"):

        class Other(Message, frozen=True):
            TYPE = "test.ping"


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300))
def test_arbitrary_bytes_never_raise_anything_but_protocol_error(data: bytes) -> None:
    try:
        decode(data)
    except ProtocolError:
        pass


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=10),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=10,
)


@settings(max_examples=300, deadline=None)
@given(
    st.dictionaries(
        st.sampled_from(
            [
                "id",
                "type",
                "version",
                "target",
                "correlation_id",
                "causation_id",
                "reply_to",
                "sent_at",
                "body",
            ]
        ),
        json_values,
    )
)
def test_arbitrary_json_objects_never_raise_anything_but_protocol_error(fields: dict[str, object]) -> None:
    data = json.loads(_wire())
    data.update(fields)
    try:
        decode(json.dumps(data).encode())
    except ProtocolError:
        pass


@pytest.mark.parametrize(
    ("field", "value"),
    [("action", "levitate"), ("action", "STOP"), ("power_state", 2), ("power_state", "running")],
)
def test_a_value_outside_the_vocabulary_is_a_protocol_error(field: str, value: object) -> None:
    """Power actions and power states are enums (protocol/states.py): a host agent or an actor
    never sees a value the protocol does not define."""
    good = Envelope.new(
        Target("server", "s1"), m.ActionDone(action=PowerAction.STOP, power_state=PowerState.SHUTDOWN)
    )
    data = json.loads(encode(good))
    assert decode(json.dumps(data).encode()).body == m.ActionDone(
        action=PowerAction.STOP, power_state=PowerState.SHUTDOWN
    )
    data["body"][field] = value
    with pytest.raises(ProtocolError):
        decode(json.dumps(data).encode())
