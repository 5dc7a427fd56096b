"""Messages of security groups: what tells the hosts that their firewall must change.

Security groups, their rules and the ports' memberships are rows the API owns; the hosts hold
no database access and compile their nftables ruleset from the internal API (hostagent/network/
firewall.py). What reaches a host is a nudge, never the rules themselves: `agent.refresh_firewall`
makes it reread its desired firewall now rather than at its next periodic pass, so an order or a
loss of nudges can never leave a host with an old ruleset for longer than that pass.

Who is nudged is the `security_group` service's decision (actors/firewall.py), one group at a
time: a rule change reaches the hosts with a port in the group; a membership change (a port
joining or leaving, its addresses or address pairs changing) reaches the hosts with a port in a
group whose rules name this one as `remote_group_id`. Membership changes are coalesced: the
first one arms the group's `fan_out` timer and the rest of a boot storm rides on it.
"""

from __future__ import annotations

from protocol.message import Message


class MembersChanged(Message, frozen=True):
    """To the `security_group` service: the group's members changed (a port actor deleted a
    port of the group). The service arms the group's coalescing fan-out timer."""

    TYPE = "security_group.members_changed"


class FanOut(Message, frozen=True):
    """To the `security_group` service: nudge the hosts this change affects. `rules`: the
    group's own rules changed (its members' hosts); `members`: its membership changed (the
    hosts of ports whose groups use it as a remote group)."""

    TYPE = "security_group.fan_out"
    rules: bool = False
    members: bool = False


class RefreshFirewall(Message, frozen=True):
    """To a host agent: reread the desired firewall of your ports and apply it now.
    `security_group_id`: the group whose change caused it (for the log); no reply."""

    TYPE = "agent.refresh_firewall"
    security_group_id: str = ""
