"""`python -m bench.firewall`: how long HostFirewall takes to apply the security groups of
`--ports` ports (default 1,000) in `--groups` groups (default 100), as root.

Everything happens in a network namespace of its own, `bench_fw_<hex>`, removed on the way out
(the tables go with it); the owner tag is `actorstack:bench_fw_<hex>:`, which tools/leftovers
knows. Each port has two fixed IPs (IPv4 and IPv6), an allowed address pair and two groups;
each group has five rules (TCP and UDP ports, ICMP, and one from its own group as a remote
group) and the ports' addresses as members. Timed, `--rounds` times each: `build` (rows to
`Firewall`) from scratch and again by a `Builder` that built the same rows before (as every
pass but the first), `render` (to nft text), a full replace (`apply(full=True)`: render, sysctl
check, `nft -f`), the update after one membership change and after a rule added to a group
(`apply`, as the agent's passes do them: build included), the replace's `nft -f` alone, and
`nft -c` of the text.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
import uuid
from typing import Any

from bench.common import log
from hostagent.network import firewall
from hostagent.network.nftables import HostFirewall, check, run_nft
from hostagent.network.ruleset import render


def rows(ports: int, groups: int) -> dict[str, Any]:
    port_rows, members = [], []
    for i in range(ports):
        mine = [f"group-{i % groups}", f"group-{(i * 7 + 3) % groups}"]
        ips = [f"10.{i // 250}.{i % 250}.10", f"fd00::{i:x}"]
        port_rows.append(
            {
                "port_id": f"port-{i:06d}-{uuid.uuid4().hex[:8]}",
                "network_id": f"net-{i % 10}",
                "mac": f"fa:16:3e:00:{i // 256:02x}:{i % 256:02x}",
                "ips": ips,
                "port_security_enabled": True,
                "allowed_address_pairs": [
                    {"ip_address": f"172.16.{i // 250}.{i % 250}", "mac_address": None}
                ],
                "security_groups": mine,
                "stateful": True,
            }
        )
        members += [{"security_group_id": g, "ip": ip} for g in mine for ip in ips]
    rules = []
    for g in range(groups):
        group = f"group-{g}"
        rules += [
            _rule(group, "ingress", "tcp", 22, 22),
            _rule(group, "ingress", "udp", 5000 + g, 5100 + g),
            _rule(group, "ingress", "icmp", 8, None),
            _rule(group, "egress", None, None, None),
            _rule(group, "ingress", "tcp", 1, 65535, remote_group_id=group),
        ]
    return {"ports": port_rows, "rules": rules, "members": members}


def _rule(
    group: str, direction: str, protocol: str | None, low: int | None, high: int | None, **extra: Any
) -> Any:
    return {
        "id": str(uuid.uuid4()),
        "security_group_id": group,
        "direction": direction,
        "ethertype": "IPv4",
        "protocol": protocol,
        "port_range_min": low,
        "port_range_max": high,
        "remote_ip_prefix": None,
        "remote_group_id": None,
    } | extra


def timed(fn: Any, *args: Any, **kwargs: Any) -> tuple[float, Any]:
    start = time.perf_counter()
    value = fn(*args, **kwargs)
    return time.perf_counter() - start, value


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ports", type=int, default=1000)
    parser.add_argument("--groups", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    name = f"bench_fw_{uuid.uuid4().hex[:8]}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        return _bench(name, args)
    finally:
        subprocess.run(["ip", "netns", "delete", name], check=False)


def _bench(name: str, args: argparse.Namespace) -> int:
    owner = f"actorstack:{name}:"
    data = rows(args.ports, args.groups)
    wanted = firewall.build(data)
    text = render(wanted, owner)
    log(
        f"{args.ports} ports, {args.groups} groups: ruleset {len(text) / 1e6:.2f} MB, "
        f"{text.count(chr(10))} lines, problems {len(wanted.problems)}"
    )
    host = HostFirewall(owner, netns=name)
    builder = firewall.Builder()
    builder.build(data)
    labels = ("build", "build again", "render", "full replace", "member update", "rule update")
    times: dict[str, list[float]] = {label: [] for label in (*labels, "nft -f alone", "nft -c")}
    for round_ in range(args.rounds):
        times["build"].append(timed(firewall.build, data)[0])
        times["build again"].append(timed(builder.build, data)[0])
        times["render"].append(timed(render, wanted, owner)[0])
        seconds, counts = timed(host.apply, wanted, full=True)
        times["full replace"].append(seconds)
        assert counts.get("firewall_replaced") == 1, counts
        data["members"].append(
            {"security_group_id": f"group-{round_ % args.groups}", "ip": f"192.0.2.{round_}"}
        )
        seconds, counts = timed(lambda: host.apply(builder.build(data)))
        times["member update"].append(seconds)
        assert counts == {"firewall_elements_added": 1}, counts  # the group's IPv4 set
        data["rules"].append(
            _rule(f"group-{round_ % args.groups}", "ingress", "tcp", 20000 + round_, 20000 + round_)
        )
        seconds, counts = timed(lambda: host.apply(builder.build(data)))
        times["rule update"].append(seconds)
        assert "firewall_replaced" not in counts and counts.get("firewall_chains_added"), counts
        wanted = builder.build(data)
        text = render(wanted, owner)
        times["nft -f alone"].append(timed(run_nft, ["-f", "-"], text, name)[0])
        times["nft -c"].append(timed(check, text, name)[0])
    for label, values in times.items():
        print(
            f"{label:>13}: median {statistics.median(values) * 1000:6.0f} ms, "
            f"min {min(values) * 1000:6.0f} ms, max {max(values) * 1000:6.0f} ms"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
