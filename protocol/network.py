"""Messages of the networking capability: the network and port actors.

A port's life: the API creates it DOWN (fixed IPs allocated in the same transaction). When its
server is scheduled, the server actor asks it to bind to the host (`port.bind`: BUILD) and waits
for every port's `server.port_bound` before it asks the host to spawn; once the host reports
the domain running with its taps, the server actor activates the ports (`port.activate`:
ACTIVE). When the server is deleted, the ports it created are deleted (`port.delete`) and the
ones the user passed are released (`port.unbind`: DOWN, free for another server).
"""

from __future__ import annotations

from protocol.message import Message

# --- to a network actor, from the API --------------------------------------------------------


class SetNetworkAdminState(Message, frozen=True):
    """admin_state_up changed: the network's status follows (ACTIVE or DOWN)."""

    TYPE = "network.set_admin_state"
    admin_state_up: bool


# --- to a port actor ---------------------------------------------------------------------------


class SetPortAdminState(Message, frozen=True):
    """From the API: admin_state_up changed; a port that is administratively down is DOWN."""

    TYPE = "port.set_admin_state"
    admin_state_up: bool


class BindPort(Message, frozen=True):
    """From a server actor: bind the port to the host the server was scheduled to."""

    TYPE = "port.bind"
    server_id: str
    host: str


class ActivatePort(Message, frozen=True):
    """From a server actor: the host runs the server with this port's tap plugged."""

    TYPE = "port.activate"
    server_id: str
    host: str


class UnbindPort(Message, frozen=True):
    """From a server actor: the server is gone; the port (the user's own) is free again."""

    TYPE = "port.unbind"
    server_id: str


class DeletePort(Message, frozen=True):
    """From a server actor: the server that created this port is gone; so is the port."""

    TYPE = "port.delete"
    server_id: str


# --- to a server actor, from a port actor --------------------------------------------------------


class PortBound(Message, frozen=True):
    TYPE = "server.port_bound"
    port_id: str
    host: str
