"""Hypothesis strategies of the rows a host's firewall is built from (`hostagent/network/
firewall.py`), as the control plane could send them: well formed, or with junk anywhere. The
values come from small pools (a few port ids, groups, MACs), so that two draws share rows."""

from __future__ import annotations

from typing import Any

from hypothesis import strategies as st

from hostagent.network import firewall

MAC = "fa:16:3e:00:00:01"

junk = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**33), 2**33),
    st.floats(allow_nan=True),
    st.text(max_size=20),
    st.sampled_from(['"', "}", "{ flush ruleset }", "\n", "a b", "../x", "fe80::1%eth0", "10.0.0.0/33"]),
    st.lists(st.text(max_size=5), max_size=2),
    st.dictionaries(st.text(max_size=5), st.text(max_size=5), max_size=2),
)


def mostly(strategy: st.SearchStrategy[Any], messy: bool) -> st.SearchStrategy[Any]:
    """A well-formed value; when messy, junk once in a while (not more: some rows must survive)."""
    return st.integers(0, 19).flatmap(lambda n: junk if n == 0 else strategy) if messy else strategy


ADDRESSES = st.one_of(
    st.ip_addresses().map(str),
    st.builds(lambda a, n: f"{a}/{n % (a.max_prefixlen + 1)}", st.ip_addresses(), st.integers(0, 128)),
    st.sampled_from(["0.0.0.0/0", "::/0", "10.0.0.5", "fd00::5", "10.0.0.0/8", "fe80::/10"]),
)
PROTOCOLS = st.one_of(
    st.none(),
    st.sampled_from(sorted(firewall.PROTOCOLS)),
    st.sampled_from(["tcp", "udp", "icmp", "ipv6-icmp", "6", "17", "1", "58", "132"]),
    st.integers(0, 255).map(str),
    st.integers(0, 255),
)
ANY_RANGE = st.tuples(st.integers(0, 65535), st.integers(0, 65535)).map(sorted)


def port_range(protocol: Any) -> st.SearchStrategy[Any]:
    """Usually the kind of range the protocol takes, sometimes any."""
    if protocol is None:
        number = None
    else:
        number = firewall.PROTOCOLS[protocol] if protocol in firewall.PROTOCOLS else int(protocol)
    if number in firewall.PORT_PROTOCOLS:
        fitting = ANY_RANGE
    elif number in (firewall.ICMP, firewall.ICMPV6):
        fitting = st.tuples(st.integers(0, 255), st.one_of(st.none(), st.integers(0, 255)))
    else:
        fitting = st.just((None, None))
    return st.one_of(st.just((None, None)), fitting, fitting, ANY_RANGE)


def protocol_and_ports(v: Any) -> st.SearchStrategy[tuple[Any, Any, Any]]:
    return PROTOCOLS.flatmap(
        lambda protocol: port_range(protocol).flatmap(
            lambda ports: st.tuples(v(st.just(protocol)), v(st.just(ports[0])), v(st.just(ports[1])))
        )
    )


def _port_id(row: Any) -> str:
    return repr(row.get("port_id") if isinstance(row, dict) else row)


def rows_of(messy: bool) -> st.SearchStrategy[dict[str, Any]]:
    """Rows as the control plane could send them; when messy, with junk anywhere."""

    def v(strategy: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
        return mostly(strategy, messy)

    groups = v(st.sampled_from(["web", "db", "Odd_id-9"]))
    macs = v(st.sampled_from([MAC, "fa:16:3e:00:00:02", "fa:16:3e:00:00:aa"]))
    addresses = v(ADDRESSES)
    ports = st.fixed_dictionaries(
        {
            "port_id": v(st.sampled_from(["p1", "p2", "p3", "p4", "abcdefghijk-1", "abcdefghijk-2"])),
            "network_id": v(st.sampled_from(["n1", "n2"])),
            "mac": macs,
            "ips": v(st.lists(v(st.ip_addresses().map(str)), max_size=3)),
            "port_security_enabled": v(st.booleans()),
            "allowed_address_pairs": v(
                st.lists(
                    st.fixed_dictionaries(
                        {"ip_address": addresses, "mac_address": st.one_of(st.none(), macs)}
                    ),
                    max_size=3,
                )
            ),
            "security_groups": v(st.lists(groups, max_size=3)),
            "stateful": v(st.booleans()),
        }
    )
    rules = st.builds(
        lambda row, p: row | {"protocol": p[0], "port_range_min": p[1], "port_range_max": p[2]},
        st.fixed_dictionaries(
            {
                "id": st.uuids().map(str),
                "security_group_id": groups,
                "direction": v(st.sampled_from(["ingress", "egress"])),
                "ethertype": v(st.sampled_from(["IPv4", "IPv6"])),
                "remote_ip_prefix": st.one_of(st.none(), addresses),
                "remote_group_id": st.one_of(st.none(), groups),
            }
        ),
        protocol_and_ports(v),
    )
    members = st.fixed_dictionaries({"security_group_id": groups, "ip": addresses})
    return st.fixed_dictionaries(
        {
            "ports": v(st.lists(v(ports), min_size=1, max_size=4, unique_by=_port_id)),
            "rules": v(st.lists(v(rules), max_size=10)),
            "members": v(st.lists(v(members), max_size=10)),
        }
    )


ANY_ROWS = st.one_of(rows_of(messy=True), rows_of(messy=False))
