"""Properties of the wire protocol (issue 10): whatever arrives, `decode` returns a valid message or
raises ProtocolError (never another exception, never a hang), every registered message type
survives encode -> decode, and the three AMQP consumers turn a ProtocolError into a dead letter
or an error reply instead of crashing.

Strategies for message bodies are derived from each type's own schema (msgspec.inspect), so a
message type added later is covered without touching this file.
"""

from __future__ import annotations

import asyncio
import json
import types
import uuid
from typing import Any

import msgspec.inspect as mi
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import protocol.compute
import protocol.network
import protocol.power
import protocol.replies
import protocol.volume
from protocol import Envelope, Message, ProtocolError, Target, decode, encode, registered_types

# Only the product's own message types (other tests register probes of their own).
PRODUCT_MODULES = {
    protocol.compute.__name__,
    protocol.network.__name__,
    protocol.replies.__name__,
    protocol.volume.__name__,
}
MESSAGE_TYPES = sorted(
    (cls for cls in registered_types().values() if cls.__module__ in PRODUCT_MODULES),
    key=lambda cls: (cls.TYPE, cls.VERSION),
)
ENVELOPE_FIELDS = (
    "id",
    "type",
    "version",
    "target",
    "correlation_id",
    "causation_id",
    "reply_to",
    "sent_at",
    "body",
)
QUICK = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# --- strategies ---------------------------------------------------------------------------------------

texts = st.text(max_size=40) | st.sampled_from(
    ["", "<&'\">", "]]>", "\x00", "\u202e", "\ud7ff", "--x", "$(id)"]
)
json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | texts
)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(texts, inner, max_size=4),
    max_leaves=20,
)


# The scalar types, by msgspec's name for them: what a correct sender may put in such a field.
SCALARS: dict[type[mi.Type], st.SearchStrategy[Any]] = {
    mi.StrType: texts,
    mi.IntType: st.integers(min_value=-(2**63), max_value=2**64 - 1),
    mi.FloatType: st.floats(allow_nan=False, allow_infinity=False),  # JSON has no NaN or infinity
    mi.BoolType: st.booleans(),
    mi.BytesType: st.binary(max_size=64),  # base64 in JSON (a console log, a dead letter's body)
    mi.NoneType: st.none(),
    mi.AnyType: json_values,
}


def strategy_for(info: mi.Type) -> st.SearchStrategy[Any]:
    """Values of a message field's declared type (what a correct sender may put on the wire)."""
    if type(info) in SCALARS:
        return SCALARS[type(info)]
    if isinstance(info, mi.ListType):
        return st.lists(strategy_for(info.item_type), max_size=3)
    if isinstance(info, mi.DictType):
        return st.dictionaries(strategy_for(info.key_type), strategy_for(info.value_type), max_size=3)
    if isinstance(info, mi.UnionType):
        return st.one_of([strategy_for(t) for t in info.types])
    if isinstance(info, mi.EnumType):  # the protocol's vocabulary (protocol/states.py)
        return st.sampled_from(list(info.cls))
    if isinstance(info, mi.StructType):
        fields = {f.name: strategy_for(f.type) for f in info.fields}
        return st.fixed_dictionaries(fields).map(lambda values: info.cls(**values))
    raise AssertionError(f"no strategy for {info!r}: a new field type in the protocol needs one here")


def bodies_of(cls: type[Message]) -> st.SearchStrategy[Message]:
    return strategy_for(mi.type_info(cls))


any_body = st.one_of([bodies_of(cls) for cls in MESSAGE_TYPES])
targets = st.builds(Target, kind=st.sampled_from(["server", "volume", "port", "network", "agent"]), id=texts)
envelopes = st.builds(
    lambda target, body, reply_to: Envelope.new(target, body, reply_to=reply_to),
    targets,
    any_body,
    st.none() | texts,
)


def _decodes_or_protocol_error(data: bytes) -> Envelope | None:
    """The property itself: a valid envelope, or ProtocolError with a reason; anything else fails."""
    try:
        envelope = decode(data)
    except ProtocolError as exc:
        assert isinstance(exc.reason, str) and exc.reason
        return None
    assert isinstance(envelope.body, Message)
    assert (envelope.type, envelope.version) == (envelope.body.TYPE, envelope.body.VERSION)
    uuid.UUID(envelope.id)
    return envelope


def _wire_dict(envelope: Envelope) -> dict[str, Any]:
    return json.loads(encode(envelope))


# --- round trips --------------------------------------------------------------------------------------


def test_the_product_registers_message_types() -> None:
    assert len(MESSAGE_TYPES) >= 40  # the derived strategies really cover the protocol


@pytest.mark.parametrize("cls", MESSAGE_TYPES, ids=lambda cls: f"{cls.TYPE}.v{cls.VERSION}")
def test_every_message_type_round_trips_with_generated_fields(cls: type[Message]) -> None:
    @settings(max_examples=25, deadline=None)
    @given(bodies_of(cls), targets, st.none() | texts)
    def round_trip(body: Message, target: Target, reply_to: str | None) -> None:
        envelope = Envelope.new(target, body, reply_to=reply_to)
        back = decode(encode(envelope))
        assert back == envelope
        assert type(back.body) is cls

    round_trip()


# --- arbitrary input ------------------------------------------------------------------------------------


@QUICK
@given(st.binary(max_size=400))
def test_arbitrary_bytes_decode_or_raise_protocol_error(data: bytes) -> None:
    _decodes_or_protocol_error(data)


@QUICK
@given(json_values)
def test_arbitrary_json_documents_decode_or_raise_protocol_error(document: Any) -> None:
    _decodes_or_protocol_error(json.dumps(document).encode())


@QUICK
@given(envelopes, st.binary(min_size=1, max_size=4), st.integers(min_value=0))
def test_valid_envelopes_with_bytes_spliced_in_decode_or_raise_protocol_error(
    envelope: Envelope, junk: bytes, where: int
) -> None:
    """Not UTF-8 inside a string, a cut-off document, a stray byte: all the sender's defects."""
    wire = encode(envelope)
    at = where % (len(wire) + 1)
    _decodes_or_protocol_error(wire[:at] + junk + wire[at:])
    _decodes_or_protocol_error(wire[:at])


@QUICK
@given(envelopes, st.sampled_from(ENVELOPE_FIELDS), json_values)
def test_an_envelope_field_replaced_by_any_json_decodes_or_raises_protocol_error(
    envelope: Envelope, field: str, value: Any
) -> None:
    data = _wire_dict(envelope)
    data[field] = value
    back = _decodes_or_protocol_error(json.dumps(data).encode())
    if back is not None and field in ("id", "type", "version"):
        assert getattr(back, field) == value


@QUICK
@given(envelopes, st.data())
def test_a_body_with_a_field_missing_replaced_or_added_decodes_or_raises_protocol_error(
    envelope: Envelope, data: st.DataObject
) -> None:
    wire = _wire_dict(envelope)
    body = wire["body"]
    mutation = data.draw(st.sampled_from(["drop", "replace", "add"]))
    if mutation == "drop" and body:
        del body[data.draw(st.sampled_from(sorted(body)))]
    elif mutation == "replace" and body:
        body[data.draw(st.sampled_from(sorted(body)))] = data.draw(json_values)
    else:
        body[data.draw(texts)] = data.draw(json_values)
    back = _decodes_or_protocol_error(json.dumps(wire).encode())
    if back is not None:  # what was accepted is a well-formed message: it round-trips
        assert decode(encode(back)) == back


@pytest.mark.parametrize("depth", [10, 1_000, 100_000])
@pytest.mark.parametrize("where", ["body", "result", "target", "unknown"])
def test_deep_nesting_anywhere_is_a_protocol_error_not_a_recursion_error(depth: int, where: str) -> None:
    envelope = Envelope.new(
        Target("server", "a"), protocol.replies.Reply(ok=False, in_reply_to="x", result={})
    )
    nested = "[" * depth + "]" * depth
    wire = encode(envelope).decode()
    if where == "body":
        wire = wire.replace('"result":{}', f'"result":{{"k":{nested}}}')
    elif where == "result":
        wire = wire.replace('"in_reply_to":"x"', f'"in_reply_to":{nested}')
    elif where == "target":
        wire = wire.replace('"kind":"server"', f'"kind":{nested}')
    else:
        wire = wire.replace('"sent_at"', f'"extra":{nested},"sent_at"')
    back = _decodes_or_protocol_error(wire.encode())
    if depth >= 1_000:  # the test also proves the input reached the decoder
        assert back is None


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ('"version":1e400', "malformed envelope"),
        ('"version":NaN', "malformed envelope"),
        ('"sent_at":NaN', "malformed envelope"),
        ('"sent_at":"now"', "malformed envelope"),
        ('"version":340282366920938463463374607431768211456', "unsupported version"),
        ('"version":-1', "unsupported version -1"),
        ('"version":true', "malformed envelope"),
        ('"type":"server.stop\\u0000"', "unknown message type"),
    ],
)
def test_special_numbers_and_characters_in_the_envelope_are_protocol_errors(text: str, reason: str) -> None:
    field = text.split(":", 1)[0].strip('"')
    wire = _wire_dict(Envelope.new(Target("server", "a"), protocol.power.Stop()))
    raw = json.dumps({k: v for k, v in wire.items() if k != field})[:-1] + "," + text + "}"
    with pytest.raises(ProtocolError) as err:
        decode(raw.encode())
    assert reason in err.value.reason


def test_huge_strings_decode_intact() -> None:
    huge = "x<&>\u00e9" * 250_000  # 1.25 M characters
    body = protocol.compute.SpawnFailed(host="h", reason=huge)
    back = decode(encode(Envelope.new(Target("server", "a"), body)))
    assert back.body == body


def test_big_integers_are_decoded_as_integers_or_refused() -> None:
    wire = _wire_dict(Envelope.new(Target("server", "a"), protocol.compute.Spawned(host="h", power_state=1)))
    for value in (2**63, 2**64, -(2**70), 10**400):
        wire["body"]["power_state"] = value
        back = _decodes_or_protocol_error(json.dumps(wire).encode())
        assert back is None or back.body.power_state == value  # never rounded through a float
    wire["body"]["power_state"] = 1.5
    assert _decodes_or_protocol_error(json.dumps(wire).encode()) is None
    wire["body"]["power_state"] = float("nan")
    assert _decodes_or_protocol_error(json.dumps(wire).encode()) is None


# --- the consumers ---------------------------------------------------------------------------------------

HOSTILE_WIRE = [
    b"",
    b"\xff\xfe\x00",
    b"[" * 100_000 + b"]" * 100_000,
    b'{"id": "\xff"}',
    json.dumps({"type": "no.such"}).encode(),
    encode(Envelope.new(Target("server", "s"), protocol.power.Stop())).replace(
        b'"body":{}', b'"body":{"x":1}'
    ),
]


class _Delivery:
    """What a consumer sees of an AMQP delivery: its body, and how it was settled."""

    def __init__(self, body: bytes) -> None:
        self.body = body
        self.routing_key = ""
        self.reply_to = None
        self.correlation_id = None
        self.settled: list[str] = []

    async def ack(self) -> None:
        self.settled.append("ack")

    async def nack(self, requeue: bool = True) -> None:
        self.settled.append("nack")

    async def reject(self, requeue: bool = False) -> None:
        self.settled.append("reject")


@pytest.mark.parametrize("body", HOSTILE_WIRE, ids=range(len(HOSTILE_WIRE)))
async def test_the_runtime_dead_letters_what_it_cannot_decode(body: bytes) -> None:
    from actors import kinds
    from actors.runtime import Runtime

    dead: list[str] = []

    async def dead_letter(
        kind: Any, envelope: Any, queue: str, raw: bytes, reason: str, details: str
    ) -> bool:
        dead.append(reason)
        return True

    async def ack(message: _Delivery) -> None:
        await message.ack()

    runtime = types.SimpleNamespace(_dead_letter=dead_letter, _ack=ack)
    delivery = _Delivery(body)
    await Runtime.handle(runtime, kinds.SERVER, "actor.server.0", delivery)  # type: ignore[arg-type]
    assert len(dead) == 1 and dead[0] and delivery.settled == ["ack"]


@pytest.mark.parametrize("body", HOSTILE_WIRE, ids=range(len(HOSTILE_WIRE)))
async def test_a_host_agent_dead_letters_what_it_cannot_decode(body: bytes) -> None:
    from hostagent.requests import RequestAgent

    class Agent(RequestAgent):
        role = "host"
        reply_kinds = ("server",)
        dead: list[str] = []

        async def _start(self) -> None:
            raise AssertionError("not started in this test")

        def _handler_for(self, body: Message) -> Any:
            raise ProtocolError(f"{body.TYPE} is not handled here")

        def _subject(self, body: Message) -> Target:
            return Target("server", "s")

        async def _dead_letter(self, message: Any, envelope: Envelope | None, reason: str) -> None:
            self.dead.append(reason)
            await message.ack()

    agent = Agent("h1", None, None, prefetch=1, heartbeat=1.0)  # type: ignore[arg-type]
    delivery = _Delivery(body)
    await asyncio.wait_for(agent._dispatch(delivery), 10)  # type: ignore[arg-type]
    assert len(agent.dead) == 1 and agent.dead[0] and delivery.settled == ["ack"]


@pytest.mark.parametrize(
    "body",
    [*HOSTILE_WIRE, b"{" * 200_000, b'{"op": "\xff"}', b"x" * (2 * 1024 * 1024)],
    ids=range(len(HOSTILE_WIRE) + 3),
)
async def test_the_command_consumer_answers_garbage_with_a_client_error(body: bytes) -> None:
    from api.commands import CommandService

    service = CommandService("amqp://127.0.0.1:1/", "http://127.0.0.1:1")
    try:
        reply = await asyncio.wait_for(service.handle(body, ""), 10)
    finally:
        await service.executor.close()
    assert reply["ok"] is False and reply["status"] in (400, 413), reply
    assert reply["error"] and "500" not in json.dumps(reply["error"])[:40]
