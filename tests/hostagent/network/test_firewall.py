"""Security groups from the control plane's rows to nft text: pure functions, no kernel. What
reaches the ruleset is validated; a bad port fails closed. (With real packets:
test_firewall_packets.py.)"""

from __future__ import annotations

import os
import random
import shutil
from collections.abc import Sequence
from ipaddress import IPv4Network, IPv6Network, ip_address
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hostagent.network import firewall
from hostagent.network.firewall import Builder, Direction, Firewall, build, table_name, zone
from hostagent.network.nftables import FirewallError, check
from hostagent.network.ruleset import Renderer, Ruleset, render, ruleset
from tests.hostagent.network.firewall_rows import ANY_ROWS, MAC

OWNER = "astest:firewall:unit"
NET = "6b1d3c2e-8f4a-4b1e-9c7d-0a1b2c3d4e5f"


def port_row(port: str = "p1", **extra: Any) -> dict[str, Any]:
    return {
        "port_id": port,
        "network_id": NET,
        "mac": MAC,
        "ips": ["10.0.0.5", "fd00::5"],
        "port_security_enabled": True,
        "allowed_address_pairs": [],
        "security_groups": ["web"],
        "stateful": True,
    } | extra


def rule_row(
    group: str = "web", direction: str = "ingress", ethertype: str = "IPv4", **extra: Any
) -> dict[str, Any]:
    return {
        "id": f"rule-{random.randrange(10**6)}",
        "security_group_id": group,
        "direction": direction,
        "ethertype": ethertype,
        "protocol": None,
        "port_range_min": None,
        "port_range_max": None,
        "remote_ip_prefix": None,
        "remote_group_id": None,
    } | extra


def rows(
    ports: list[dict[str, Any]] | None = None, rules: Sequence[Any] = (), members: Sequence[Any] = ()
) -> Any:
    return {"ports": [port_row()] if ports is None else ports, "rules": list(rules), "members": list(members)}


def chain_of(text: str, tap: str, direction: Direction) -> list[str]:
    """The statements of the rule chain a tap's traffic of one direction goes to."""
    name = "egress_rules" if direction is Direction.EGRESS else "ingress_rules"
    body = text.split(f"map {name} {{", 1)[1].split("}", 1)[0]
    chain = body.split(f'"{tap}" : goto ', 1)[1].split(",", 1)[0].split()[0]
    return [line.strip() for line in text.split(f"chain {chain} {{\n", 1)[1].split("\t}", 1)[0].splitlines()]


def elements(text: str, name: str) -> list[str]:
    """The elements of a named set of the rendered text."""
    body = text.split(f"\tset {name} {{\n", 1)[1].split("\n\t}", 1)[0]
    if "elements = {" not in body:
        return []
    listed = body.split("elements = {", 1)[1].rsplit("}", 1)[0]
    return [element.strip() for element in listed.split(",")]


def ingress(rule: dict[str, Any]) -> list[str]:
    return chain_of(render(build(rows(rules=[rule])), OWNER), "tapp1", Direction.INGRESS)


# --- ports ------------------------------------------------------------------------------------------


def test_a_port_with_port_security_gets_both_guards_and_its_bridge_a_zone() -> None:
    fw = build(rows())
    assert list(fw.ports) == ["tapp1"] and fw.problems == frozenset()
    text = render(fw, OWNER)
    assert '"tapp1" : jump egress_guard' in text and '"tapp1" : jump ingress_guard' in text
    assert elements(text, "port_macs") == ['"tapp1" . fa:16:3e:00:00:01']
    assert elements(text, "port_ipv4") == ['"tapp1" . fa:16:3e:00:00:01 . 10.0.0.5']  # anti-spoofing
    assert elements(text, "port_ipv6") == [
        '"tapp1" . fa:16:3e:00:00:01 . fd00::5',
        '"tapp1" . fa:16:3e:00:00:01 . fe80::/64',  # link-local, for ND
    ]
    assert elements(text, "stateful_ports") == ['"tapp1"']
    assert fw.zones == {"brq6b1d3c2e-8f": zone(NET)}
    assert f'"brq6b1d3c2e-8f" : {zone(NET)}' in text


def test_port_security_off_is_not_filtered_at_all() -> None:
    fw = build(rows([port_row(port_security_enabled=False)]))
    assert fw.ports == {} and fw.blocked == frozenset() and fw.unfiltered == {"tapp1"}
    assert "tapp1" not in render(fw, OWNER)
    assert fw.zones == {"brq6b1d3c2e-8f": zone(NET)}  # its network's conntrack still has its zone


@pytest.mark.parametrize(
    "bad",
    [
        {"mac": "not-a-mac"},
        {"mac": "01:00:5e:00:00:01"},  # multicast
        {"mac": "FA:16:3E:00:00:01"},  # not PostgreSQL's text form
        {"network_id": "../etc"},
        {"ips": ["10.0.0.300"]},
        {"ips": "10.0.0.5"},
        {"ips": ["fe80::1%eth0"]},  # a scope id would reach nft
        {"ips": [5]},
        {"port_security_enabled": "yes"},
        {"stateful": 1},
        {"security_groups": ["web", 'x"; flush ruleset; "']},
        {"allowed_address_pairs": [{"ip_address": "10.1.0.0/33", "mac_address": None}]},
        {"allowed_address_pairs": [{"ip_address": "10.1.0.9", "mac_address": "ff:ff:ff:ff:ff:ff"}]},
        {"allowed_address_pairs": [{"mac_address": None}]},
        {"allowed_address_pairs": ["10.1.0.9"]},
    ],
)
def test_a_bad_port_row_fails_closed(bad: dict[str, Any]) -> None:
    fw = build(rows([port_row(**bad), port_row("p2", mac="fa:16:3e:00:00:02")]))
    assert fw.blocked == {"tapp1"} and list(fw.ports) == ["tapp2"]
    assert len(fw.problems) == 1 and "port p1" in next(iter(fw.problems))
    text = render(fw, OWNER)
    assert text.count('"tapp1" : drop') == 2  # both directions
    assert "tapp1" not in text.replace('"tapp1" : drop', "")


def test_a_port_row_without_a_field_fails_closed_too() -> None:
    row = port_row()
    del row["security_groups"]
    fw = build(rows([row]))
    assert fw.blocked == {"tapp1"} and "missing 'security_groups'" in next(iter(fw.problems))


def test_a_port_with_a_bad_id_has_no_tap_and_is_only_reported() -> None:
    fw = build(rows([port_row("../p1"), port_row(None)]))
    assert fw.ports == {} and fw.blocked == frozenset() and len(fw.problems) == 2


def test_two_ports_with_one_tap_name_are_both_blocked() -> None:
    fw = build(rows([port_row("abcdefghijk-1"), port_row("abcdefghijk-2", mac="fa:16:3e:00:00:02")]))
    assert fw.ports == {} and fw.blocked == {"tapabcdefghijk"} and len(fw.problems) == 1


def test_allowed_address_pairs_may_send_with_their_mac_or_the_ports() -> None:
    pairs = [
        {"ip_address": "10.0.0.9", "mac_address": None},
        {"ip_address": "10.1.0.0/24", "mac_address": "fa:16:3e:00:00:aa"},
        {"ip_address": "10.0.0.0/24", "mac_address": None},  # contains the fixed IP and the pair above
    ]
    fw = build(rows([port_row(allowed_address_pairs=pairs)]))
    port = fw.ports["tapp1"]
    assert port.macs == ["fa:16:3e:00:00:01", "fa:16:3e:00:00:aa"]
    assert port.sources(4) == {
        "fa:16:3e:00:00:01": [IPv4Network("10.0.0.0/24")],  # merged: the kernel refuses overlaps
        "fa:16:3e:00:00:aa": [IPv4Network("10.1.0.0/24")],
    }
    assert port.sources(6) == {"fa:16:3e:00:00:01": [IPv6Network("fd00::5/128"), firewall.LINK_LOCAL]}
    text = render(fw, OWNER)
    assert elements(text, "port_macs") == ['"tapp1" . fa:16:3e:00:00:01', '"tapp1" . fa:16:3e:00:00:aa']
    assert elements(text, "port_ipv4") == [
        '"tapp1" . fa:16:3e:00:00:01 . 10.0.0.0/24',
        '"tapp1" . fa:16:3e:00:00:aa . 10.1.0.0/24',
    ]


def test_a_port_without_groups_gets_only_what_ip_needs() -> None:
    text = render(build(rows([port_row(security_groups=[])], rules=[rule_row(protocol="tcp")])), OWNER)
    assert chain_of(text, "tapp1", Direction.INGRESS) == ["drop"]
    assert chain_of(text, "tapp1", Direction.EGRESS) == ["drop"]
    guard = text.split("chain ingress_guard {", 1)[1].split("}", 1)[0]
    assert "meta protocol arp return" in guard and "udp sport 67 udp dport 68 return" in guard


def test_a_stateless_port_uses_no_conntrack() -> None:
    fw = build(rows([port_row(stateful=False), port_row("p2", mac="fa:16:3e:00:00:02")]))
    text = render(fw, OWNER)
    assert elements(text, "stateful_ports") == ['"tapp2"']
    assert "iifname @stateful_ports meta mark & 0x40000000 != 0 drop" in text


def test_ports_with_the_same_rules_share_their_chains() -> None:
    fw = build(rows([port_row(), port_row("p2", mac="fa:16:3e:00:00:02")], rules=[rule_row(protocol="tcp")]))
    text = render(fw, OWNER)
    assert text.count("chain in_") == 1 and text.count("chain out_") == 1


# --- rules ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("protocol", "ethertype", "statement"),
    [
        (None, "IPv4", "meta protocol ip return"),
        ("tcp", "IPv4", "meta protocol ip meta l4proto 6 return"),
        ("6", "IPv4", "meta protocol ip meta l4proto 6 return"),
        (6, "IPv4", "meta protocol ip meta l4proto 6 return"),
        ("UDP", "IPv4", "meta protocol ip meta l4proto 17 return"),
        ("icmp", "IPv4", "meta protocol ip meta l4proto 1 return"),
        ("icmp", "IPv6", "meta protocol ip6 meta l4proto 58 return"),  # Neutron normalises it
        ("ipv6-icmp", "IPv6", "meta protocol ip6 meta l4proto 58 return"),
        ("icmpv6", "IPv6", "meta protocol ip6 meta l4proto 58 return"),
        ("58", "IPv6", "meta protocol ip6 meta l4proto 58 return"),
        ("gre", "IPv4", "meta protocol ip meta l4proto 47 return"),
        ("sctp", "IPv6", "meta protocol ip6 meta l4proto 132 return"),
        ("vrrp", "IPv4", "meta protocol ip meta l4proto 112 return"),
        ("253", "IPv4", "meta protocol ip meta l4proto 253 return"),
        ("0", "IPv4", "meta protocol ip return"),  # 0 is any, as in Neutron's iptables driver
        ("ip", "IPv4", "meta protocol ip return"),
    ],
)
def test_protocols_by_name_or_number(protocol: Any, ethertype: str, statement: str) -> None:
    assert ingress(rule_row(protocol=protocol, ethertype=ethertype)) == [statement, "drop"]


@pytest.mark.parametrize(
    ("protocol", "low", "high", "match"),
    [
        ("tcp", 22, 22, "tcp dport 22"),
        ("tcp", 1000, 2000, "tcp dport 1000-2000"),
        ("udp", 0, 65535, "udp dport 0-65535"),
        ("sctp", 9, 9, "sctp dport 9"),
        ("udplite", 5, 6, "udplite dport 5-6"),
        ("dccp", 7, 7, "dccp dport 7"),
        ("17", 53, 53, "udp dport 53"),
        ("icmp", 8, None, "icmp type 8"),
        ("icmp", 3, 4, "icmp type 3 icmp code 4"),
        ("icmp", 0, 0, "icmp type 0 icmp code 0"),
    ],
)
def test_port_ranges_and_icmp_type_and_code(protocol: str, low: int, high: int | None, match: str) -> None:
    assert ingress(rule_row(protocol=protocol, port_range_min=low, port_range_max=high)) == [
        f"meta protocol ip {match} return",
        "drop",
    ]


def test_icmpv6_type_and_code_and_a_remote_prefix() -> None:
    rule = rule_row(ethertype="IPv6", protocol="ipv6-icmp", port_range_min=128, port_range_max=0)
    assert ingress(rule | {"remote_ip_prefix": "fd00:1::/64"}) == [
        "meta protocol ip6 ip6 saddr fd00:1::/64 icmpv6 type 128 icmpv6 code 0 return",
        "drop",
    ]


def test_egress_rules_match_the_destination() -> None:
    rule = rule_row(direction="egress", protocol="tcp", port_range_min=443, port_range_max=443)
    text = render(build(rows(rules=[rule | {"remote_ip_prefix": "192.0.2.7/24"}])), OWNER)
    assert chain_of(text, "tapp1", Direction.EGRESS) == [
        "meta protocol ip ip daddr 192.0.2.0/24 tcp dport 443 return",  # host bits dropped
        "drop",
    ]
    assert chain_of(text, "tapp1", Direction.INGRESS) == ["drop"]


def test_a_prefix_of_everything_is_no_match_on_the_address() -> None:
    assert ingress(rule_row(remote_ip_prefix="0.0.0.0/0")) == ["meta protocol ip return", "drop"]


@pytest.mark.parametrize(
    "bad",
    [
        {"protocol": "gre", "port_range_min": 1, "port_range_max": 2},  # ports without port protocol
        {"protocol": None, "port_range_min": 22, "port_range_max": 22},
        {"protocol": "tcp", "port_range_min": 2000, "port_range_max": 1000},
        {"protocol": "tcp", "port_range_min": 22, "port_range_max": None},
        {"protocol": "tcp", "port_range_min": 1, "port_range_max": 70000},
        {"protocol": "tcp", "port_range_min": True, "port_range_max": 5},
        {"protocol": "tcp", "port_range_min": "22", "port_range_max": "22"},
        {"protocol": "icmp", "port_range_min": 256, "port_range_max": None},
        {"protocol": "icmp", "port_range_min": 8, "port_range_max": 256},
        {"protocol": "icmp", "port_range_min": None, "port_range_max": 0},  # a code without a type
        {"protocol": "ipv6-icmp"},  # in an IPv4 rule
        {"protocol": "ipv6-frag"},
        {"protocol": "bogus"},
        {"protocol": "256"},
        {"protocol": "-1"},
        {"protocol": "６"},  # a digit, but not ASCII
        {"protocol": 6.0},
        {"remote_ip_prefix": "fd00::/64"},  # IPv6 prefix in an IPv4 rule
        {"remote_ip_prefix": "10.0.0.0/8", "remote_group_id": "web"},
        {"remote_ip_prefix": "10.0.0.0/8; flush ruleset"},
        {"remote_group_id": "a b"},
        {"security_group_id": "web\n"},
        {"direction": "both"},
        {"ethertype": "ipv4"},
    ],
)
def test_a_bad_rule_is_left_out(bad: dict[str, Any]) -> None:
    fw = build(rows(rules=[rule_row(**bad)]))
    assert fw.rules == {} and len(fw.problems) == 1 and "left out" in next(iter(fw.problems))
    assert ingress(rule_row(**bad)) == ["drop"]


def test_rules_of_groups_no_port_here_uses_are_not_kept() -> None:
    fw = build(rows(rules=[rule_row("web"), rule_row("elsewhere")]))
    assert list(fw.rules) == ["web"]


def test_the_rendering_does_not_depend_on_the_order_of_rows() -> None:
    ports = [
        port_row(f"p{i}", mac=f"fa:16:3e:00:00:0{i}", security_groups=["web", "db"]) for i in range(1, 5)
    ]
    rules = [
        rule_row(protocol="tcp", port_range_min=p, port_range_max=p, remote_group_id="db")
        for p in (22, 80, 443)
    ] + [rule_row("db", "egress")]
    members = [{"security_group_id": "db", "ip": f"10.0.0.{i}"} for i in range(9)]
    text = render(build(rows(ports, rules, members)), OWNER)
    for _ in range(5):
        for listed in (ports, rules, members):
            random.shuffle(listed)
        assert render(build(rows(ports, rules, members)), OWNER) == text


# --- remote groups ------------------------------------------------------------------------------------


def test_remote_groups_are_sets_of_their_members() -> None:
    rules = [
        rule_row(protocol="tcp", port_range_min=22, port_range_max=22, remote_group_id="admins"),
        rule_row(ethertype="IPv6", remote_group_id="admins"),
    ]
    members = [
        {"security_group_id": "admins", "ip": "10.0.0.7"},
        {"security_group_id": "admins", "ip": "10.0.1.0/24"},
        {"security_group_id": "admins", "ip": "10.0.1.9"},  # inside the /24: merged
        {"security_group_id": "admins", "ip": "fd00::7"},
        {"security_group_id": "admins", "ip": "not an address"},
        {"security_group_id": "others", "ip": "10.9.9.9"},  # not a remote group of any rule here
    ]
    fw = build(rows(rules=rules, members=members))
    assert fw.members == {
        "admins": (IPv4Network("10.0.0.7/32"), IPv4Network("10.0.1.0/24"), IPv6Network("fd00::7/128"))
    }
    assert len(fw.problems) == 1
    rs = ruleset(fw, OWNER)
    assert {name: rs.sets[name] for name in rs.sets if name.startswith("sg_")} == {
        "sg_admins_v4": {"10.0.0.7", "10.0.1.0/24"},
        "sg_admins_v6": {"fd00::7"},
    }
    assert ingress(rules[0]) == ["meta protocol ip ip saddr @sg_admins_v4 tcp dport 22 return", "drop"]
    assert sorted(chain_of(rs.replace(), "tapp1", Direction.INGRESS)) == [
        "drop",
        "meta protocol ip ip saddr @sg_admins_v4 tcp dport 22 return",
        "meta protocol ip6 ip6 saddr @sg_admins_v6 return",
    ]


def test_a_remote_group_without_members_is_an_empty_set() -> None:
    rs = ruleset(build(rows(rules=[rule_row(remote_group_id="web")])), OWNER)
    assert rs.sets["sg_web_v4"] == rs.sets["sg_web_v6"] == frozenset()
    assert "set sg_web_v4 {\n\t\ttype ipv4_addr; flags interval;\n\t}" in rs.replace()


def test_a_membership_change_updates_the_groups_set_elements_only() -> None:
    rules = [rule_row(remote_group_id="web")]

    def with_member(ip: str) -> Ruleset:
        return ruleset(build(rows(rules=rules, members=[{"security_group_id": "web", "ip": ip}])), OWNER)

    before, after = with_member("10.0.0.5"), with_member("10.0.0.6")
    table = table_name(OWNER)
    assert after.update(before) == (
        f"delete element bridge {table} sg_web_v4 {{ 10.0.0.5 }}\n"
        f"add element bridge {table} sg_web_v4 {{ 10.0.0.6 }}\n",
        {"firewall_elements_deleted": 1, "firewall_elements_added": 1},
    )
    emptied = ruleset(build(rows(rules=rules)), OWNER)
    assert emptied.update(before) == (
        f"delete element bridge {table} sg_web_v4 {{ 10.0.0.5 }}\n",
        {"firewall_elements_deleted": 1},
    )
    assert before.update(before) == ("", {})


def test_a_rule_change_moves_the_taps_to_a_new_chain_and_deletes_the_old_one() -> None:
    ports = [port_row("p1"), port_row("p2", mac="fa:16:3e:00:00:02", ips=["10.0.0.6"])]
    before = ruleset(build(rows(ports, rules=[rule_row(protocol="icmp")])), OWNER)
    after = ruleset(build(rows(ports, rules=[rule_row(protocol="icmp"), rule_row(protocol="tcp")])), OWNER)
    old, new = before.maps["ingress_rules"]["tapp1"], after.maps["ingress_rules"]["tapp1"]
    assert old != new and after.maps["ingress_rules"] == {"tapp1": new, "tapp2": new}
    old_chain, new_chain = old.removeprefix("goto "), new.removeprefix("goto ")
    update = after.update(before)
    assert update is not None
    table = table_name(OWNER)
    assert update.text.splitlines() == [
        f"table bridge {table} {{",
        f"\tchain {new_chain} {{",
        "\t\tmeta protocol ip meta l4proto 1 return",
        "\t\tmeta protocol ip meta l4proto 6 return",
        "\t\tdrop",
        "\t}",
        "}",
        f'delete element bridge {table} ingress_rules {{ "tapp1", "tapp2" }}',
        f"add element bridge {table} ingress_rules "
        f'{{ "tapp1" : goto {new_chain}, "tapp2" : goto {new_chain} }}',
        f"delete chain bridge {table} {old_chain}",
    ]
    assert update.counts == {
        "firewall_chains_added": 1,
        "firewall_elements_deleted": 2,
        "firewall_elements_added": 2,
        "firewall_chains_deleted": 1,
    }


# --- the tables -------------------------------------------------------------------------------------


def test_tables_are_named_after_the_owner_and_carry_it() -> None:
    text = render(build(rows()), OWNER)
    table = table_name(OWNER)
    assert table.startswith("actorstack_") and len(table) == len("actorstack_") + 12
    assert table_name("astest:other") != table
    assert text.startswith(
        f"table bridge {table} {{}}\ndelete table bridge {table}\ntable bridge {table} {{\n"
    )
    assert f"table inet {table} {{}}\ndelete table inet {table}\ntable inet {table} {{\n" in text
    assert text.count(f'\tcomment "{OWNER}"\n') == 2


@pytest.mark.parametrize("owner", ["", 'a"b', "a\\b", "a\nb", "é", "x" * 129])
def test_an_owner_tag_nft_cannot_carry_is_refused(owner: str) -> None:
    with pytest.raises(ValueError, match="owner tag"):
        render(build(rows()), owner)


def test_zones_are_stable_and_in_range() -> None:
    assert zone(NET) == zone(NET) and 1 <= zone(NET) <= firewall.ZONES
    assert {zone(str(i)) for i in range(1000)} <= set(range(1, firewall.ZONES + 1))


def test_no_ports_still_renders_both_tables() -> None:
    fw = build({})
    assert fw == Firewall({}, frozenset(), frozenset(), {}, {}, {}, frozenset())
    text = render(fw, OWNER)
    assert "hook forward" in text and "hook prerouting" in text


# --- any rows: never an exception, always a ruleset nft accepts ----------------------------------------


def _can_check() -> bool:
    return os.geteuid() == 0 and shutil.which("nft", path="/usr/sbin:/usr/bin:/sbin:/bin") is not None


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ANY_ROWS)
def test_any_rows_render_a_ruleset_nft_accepts(data: dict[str, Any]) -> None:
    fw = build(data)
    text = render(fw, OWNER)
    assert all(isinstance(problem, str) for problem in fw.problems)
    for tap in fw.blocked:
        assert text.count(f'"{tap}" : drop') == 2
    if _can_check():
        try:
            check(text)  # check mode: the kernel validates, nothing changes
        except FirewallError as exc:
            raise AssertionError(f"{exc}\n{text}") from None


# --- passes that remember: the same as starting afresh -------------------------------------------------


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(ANY_ROWS, min_size=2, max_size=6))
def test_a_builder_and_a_renderer_that_remember_give_what_a_fresh_start_gives(steps: list[Any]) -> None:
    builder, renderer = Builder(), Renderer()
    for data in [*steps, steps[0]]:  # and back: a row seen two builds ago is read afresh
        remembered = builder.build(data)
        assert remembered == build(data)
        assert renderer.ruleset(remembered, OWNER) == ruleset(build(data), OWNER)


def test_an_unchanged_row_gives_the_same_objects() -> None:
    builder = Builder()
    data = rows([port_row("p1"), port_row("p2", mac="fa:16:3e:00:00:02")], rules=[rule_row(protocol="tcp")])
    first = builder.build(data)
    data["ports"][1] = port_row("p2", mac="fa:16:3e:00:00:03")
    second = builder.build(data)
    assert second.ports["tapp1"] is first.ports["tapp1"]
    assert second.ports["tapp2"] is not first.ports["tapp2"] and second.ports["tapp2"].mac.endswith(":03")
    assert second.rules["web"][0] is first.rules["web"][0]


# --- what a change revokes (conntrack entries to delete) ---------------------------------------


def _match(
    revoked: frozenset[firewall.Revocation], source: str, destination: str, proto: int, dport: int
) -> bool:
    return any(
        r.matches(zone(NET), proto, ip_address(source), ip_address(destination), dport) for r in revoked
    )


def test_a_removed_rule_revokes_the_connections_it_admitted_and_no_others() -> None:
    ssh, web = (
        rule_row(protocol="tcp", port_range_min=22, port_range_max=22),
        rule_row(protocol="tcp", port_range_min=80, port_range_max=80),
    )
    before, after = build(rows(rules=[ssh, web])), build(rows(rules=[web]))
    revoked = firewall.revocations(before, after)
    assert _match(revoked, "10.9.9.9", "10.0.0.5", 6, 22)  # to the port, on 22
    assert not _match(revoked, "10.9.9.9", "10.0.0.5", 6, 80)  # still admitted
    assert not _match(revoked, "10.9.9.9", "10.0.0.6", 6, 22)  # another address
    assert not _match(revoked, "10.0.0.5", "10.9.9.9", 6, 22)  # egress from the port
    assert not _match(revoked, "10.9.9.9", "10.0.0.5", 17, 22)  # udp
    assert firewall.revocations(after, before) == frozenset()  # adding a rule revokes nothing
    assert firewall.revocations(before, before) == frozenset()


def test_leaving_a_group_revokes_its_rules_and_an_egress_rule_the_destination() -> None:
    out = rule_row(direction="egress", protocol="udp", remote_ip_prefix="192.0.2.0/24")
    before = build(rows(rules=[out]))
    after = build(rows(ports=[port_row(security_groups=[])], rules=[out]))
    revoked = firewall.revocations(before, after)
    assert _match(revoked, "10.0.0.5", "192.0.2.7", 17, 53)
    assert not _match(revoked, "10.0.0.5", "198.51.100.7", 17, 53)  # not what the rule admitted
    assert not _match(revoked, "192.0.2.7", "10.0.0.5", 17, 53)  # the other direction


def test_a_remote_group_that_loses_a_member_revokes_that_peer_only() -> None:
    rule = rule_row(remote_group_id="peers")
    members = [
        {"security_group_id": "peers", "ip": "10.0.0.8"},
        {"security_group_id": "peers", "ip": "10.0.0.9"},
    ]
    before, after = build(rows(rules=[rule], members=members)), build(rows(rules=[rule], members=members[1:]))
    revoked = firewall.revocations(before, after)
    assert _match(revoked, "10.0.0.8", "10.0.0.5", 6, 443)
    assert not _match(revoked, "10.0.0.9", "10.0.0.5", 6, 443)
    wider = build(rows(rules=[rule], members=[{"security_group_id": "peers", "ip": "10.0.0.8/29"}]))
    assert firewall.revocations(before, wider) == frozenset()  # it still holds both


def test_a_blocked_port_loses_everything_and_a_stateless_or_unfiltered_one_nothing() -> None:
    before = build(rows(rules=[rule_row()]))
    blocked = build(rows(ports=[port_row(mac="not a mac")]))
    assert blocked.blocked
    revoked = firewall.revocations(before, blocked)
    assert _match(revoked, "10.9.9.9", "10.0.0.5", 1, 0) and _match(revoked, "10.0.0.5", "10.9.9.9", 17, 53)
    assert (
        firewall.revocations(
            before, build(rows(ports=[port_row(port_security_enabled=False, security_groups=[])]))
        )
        == frozenset()
    )
    stateless = build(rows(ports=[port_row(stateful=False)], rules=[rule_row()]))
    assert firewall.revocations(stateless, build(rows(ports=[port_row(stateful=False)]))) == frozenset()


def test_revocations_are_in_the_ports_zone_and_ip_version() -> None:
    before, after = build(rows(rules=[rule_row(ethertype="IPv6")])), build(rows())
    revoked = firewall.revocations(before, after)
    assert _match(revoked, "fd00::9", "fd00::5", 58, 0)
    assert not _match(revoked, "10.9.9.9", "10.0.0.5", 6, 22)
    assert not any(
        r.matches(zone(NET) + 1, 58, ip_address("fd00::9"), ip_address("fd00::5"), 0) for r in revoked
    )
