"""`python -m bench.security_groups [--ports 1000] [--groups 100] [--changes 50]`: how long a
security group change made through the API takes to be in force in a host's nftables, on a host
with `--ports` VM ports in `--groups` groups.

The bench starts a cloud of its own (actorstack/scratch.py: a database and vhost `bench_sg_<hex>`,
state in /tmp/bench-sg-<hex>): `actorstack up --hosts 1 --virt test --network linux` (real
bridges, taps and nftables tables on this machine, tagged with the cloud's owner; nothing routed,
no host NIC touched), the CPU allocation ratio raised so that one host takes every server. As
admin, with the quotas lifted, it makes a network with a /20, `--groups` groups (each with an
ICMP rule from 10.0.0.0/8 and an SSH rule whose remote group is the next group, so every group is
some group's remote group and has an nftables set on the host) and boots `--ports` servers, as
many in each group, on that network (requests of `min_count` 10). Once every server is ACTIVE and
the host's firewall holds every port, it measures `--changes` times each:

1. rule added: POST a rule (TCP to a port of its own, from 192.0.2.0/24) to a group; done when
   the host's ruleset filters that group's ports by it (the port's rule chain, found from the
   `ingress_rules` map of the bridge table, holds the port number);
2. rule deleted: DELETE it; done when the port's rule chain no longer holds it;
3. member added: POST a port (not bound anywhere) in a group; done when its address is in that
   group's set (`sg_<group>_v4`), which the next group's rule names;
4. member deleted: DELETE the port; done when the address has left the set.

Each time is from just before the request to the first `nft` listing that shows the change
(listings every 20 ms; a listing of the table takes a few ms, which bounds the resolution). The
goal (issue 20) is a p99 of 1 s or less for each.

Everything is removed at the end, also on failure or Ctrl-C: the cloud stops (with the test
driver it removes its bridges, taps, namespaces and nftables tables), then the database, vhost
and state directory go. Root only (bridges, nftables, rabbitmqctl).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import secrets
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp

from actorstack.scratch import ScratchCloud, ScratchError, ScratchServices
from bench.common import BenchError, exit_code, percentile
from bench.common import log as _log
from hostagent.network.desired import tap_name
from hostagent.network.firewall import set_name, table_name

POLL = 0.02  # s between nft listings
SERIES = ("rule added", "rule deleted", "member added", "member deleted")


def _nft(*args: str) -> str:
    done = subprocess.run(["nft", *args], capture_output=True, text=True, timeout=60)
    if done.returncode != 0:
        raise BenchError(f"nft {' '.join(args)}: {done.stderr.strip()}")
    return done.stdout


class Bench:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.tag = secrets.token_hex(4)
        self.name = f"bench_sg_{self.tag}"
        self.state_dir = Path(f"/tmp/bench-sg-{self.tag}")
        self.services = ScratchServices(self.name, state_dir=self.state_dir)
        self.cloud: ScratchCloud = self.services.cloud(log_dir=self.state_dir / "logs", new_session=True)
        self.token = ""
        self.project_id = ""
        self.session: aiohttp.ClientSession | None = None
        self.table = ""
        self.network_id = ""
        self.groups: list[str] = []
        self.members: dict[str, list[str]] = {}  # group -> the ports of its servers
        self.times: dict[str, list[float]] = {series: [] for series in SERIES}

    # --- the API --------------------------------------------------------------------------------

    async def call(self, method: str, path: str, body: Any = None, expect: int = 200) -> Any:
        assert self.session is not None
        headers = {"X-Auth-Token": self.token, "OpenStack-API-Version": "compute 2.96"}
        async with self.session.request(method, self.cloud.url + path, json=body, headers=headers) as r:
            data = await r.json(content_type=None) if r.status != 204 else None
            if r.status != expect:
                raise BenchError(f"{method} {path}: {r.status} {data}")
            return data

    # --- the cloud ------------------------------------------------------------------------------

    async def start(self) -> None:
        await self.services.create()
        await self.cloud.run("db", "init")
        up = [
            "up", "--hosts", "1", "--virt", "test", "--network", "linux", "--storage", "none",
            "--listen", self.cloud.listen, "--cpu-allocation-ratio", "64", "--log-format", "json",
            "--log-level", "warning",
        ]  # fmt: skip
        _log(f"starting the cloud: actorstack {shlex.join(up)} (database and vhost {self.name})")
        self.cloud.start("up", *up)
        await self.cloud.wait_ready(hosts=1, storage=False, timeout=120)
        self.token, self.project_id = await self.cloud.admin_token()
        self.session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=300))
        owner = await self._owner()
        self.table = table_name(owner)

    async def _owner(self) -> str:
        """The owner tag the host's networking writes (actorstack:<database>:<cloud id>)."""
        import asyncpg

        conn = await asyncpg.connect(self.services.database_url)
        try:
            cloud_id = await conn.fetchval(
                "SELECT value #>> '{}' FROM cluster_settings WHERE key = 'cloud_id'"
            )
        finally:
            await conn.close()
        return f"actorstack:{self.name}:{cloud_id}"

    async def prepare(self) -> None:
        p = self.project_id
        await self.call(
            "PUT",
            f"/compute/v2.1/os-quota-sets/{p}",
            {"quota_set": {"instances": -1, "cores": -1, "ram": -1}},
        )
        unlimited = {"port": -1, "security_group": -1, "security_group_rule": -1, "network": -1, "subnet": -1}
        await self.call("PUT", f"/networking/v2.0/quotas/{p}", {"quota": unlimited})
        flavor = await self.call(
            "POST",
            "/compute/v2.1/flavors",
            {"flavor": {"name": f"sg-{self.tag}", "ram": 64, "vcpus": 1, "disk": 0}},
        )
        meta = {
            "name": f"sg-{self.tag}",
            "disk_format": "raw",
            "container_format": "bare",
            "visibility": "public",
        }
        image = await self.call("POST", "/image/v2/images", meta, expect=201)
        assert self.session is not None
        async with self.session.put(
            f"{self.cloud.url}/image/v2/images/{image['id']}/file",
            data=b"\0" * 1024 * 1024,
            headers={"X-Auth-Token": self.token, "Content-Type": "application/octet-stream"},
        ) as r:
            if r.status != 204:
                raise BenchError(f"image upload: {r.status}")
        net = await self.call(
            "POST", "/networking/v2.0/networks", {"network": {"name": "sg-bench"}}, expect=201
        )
        self.network_id = net["network"]["id"]
        subnet = {"network_id": self.network_id, "cidr": "10.80.0.0/20", "ip_version": 4}
        await self.call("POST", "/networking/v2.0/subnets", {"subnet": subnet}, expect=201)
        for index in range(self.args.groups):
            group = await self.call(
                "POST",
                "/networking/v2.0/security-groups",
                {"security_group": {"name": f"g{index}"}},
                expect=201,
            )
            self.groups.append(group["security_group"]["id"])
        rules: list[dict[str, Any]] = []
        for index, group in enumerate(self.groups):
            following = self.groups[(index + 1) % len(self.groups)]
            rules.append({"security_group_id": group, "direction": "ingress", "protocol": "icmp",
                          "remote_ip_prefix": "10.0.0.0/8"})  # fmt: skip
            rules.append({"security_group_id": group, "direction": "ingress", "protocol": "tcp",
                          "port_range_min": 22, "port_range_max": 22,
                          "remote_group_id": following})  # fmt: skip
        await self.call(
            "POST", "/networking/v2.0/security-group-rules", {"security_group_rules": rules}, expect=201
        )
        await self._boot(flavor["flavor"]["id"], image["id"])

    async def _boot(self, flavor: str, image: str) -> None:
        per_group = max(1, self.args.ports // self.args.groups)
        started = time.monotonic()
        requests = []
        for index, group in enumerate(self.groups):
            left = per_group
            while left > 0:
                count = min(10, left)
                left -= count
                requests.append((index, group, count))
        semaphore = asyncio.Semaphore(8)

        async def boot(index: int, group: str, count: int) -> None:
            async with semaphore:
                body = {
                    "server": {
                        "name": f"sg{index}", "flavorRef": flavor, "imageRef": image, "min_count": count,
                        "max_count": count, "networks": [{"uuid": self.network_id}],
                        "security_groups": [{"name": group}],
                    }
                }  # fmt: skip
                await self.call("POST", "/compute/v2.1/servers", body, expect=202)

        await asyncio.gather(*(boot(*r) for r in requests))
        total = per_group * len(self.groups)
        _log(f"asked for {total} servers; waiting for them to be ACTIVE")
        while True:
            listed = await self.call(
                "GET", f"/networking/v2.0/ports?network_id={self.network_id}&status=ACTIVE&fields=id"
            )
            if len(listed["ports"]) >= total:
                break
            servers = await self.call("GET", "/compute/v2.1/servers?status=ERROR")
            if servers["servers"]:
                raise BenchError(f"{len(servers['servers'])} servers failed to boot")
            await asyncio.sleep(1)
        _log(f"{total} servers ACTIVE in {time.monotonic() - started:.0f} s")
        ports = await self.call(
            "GET", f"/networking/v2.0/ports?network_id={self.network_id}&device_owner=compute:nova"
        )
        for port in ports["ports"]:
            for group in port["security_groups"]:
                self.members.setdefault(group, []).append(port["id"])
        deadline = time.monotonic() + 300
        while len(self._ingress_map()) < total:
            if time.monotonic() > deadline:
                raise BenchError(
                    f"the host's firewall never held every port; tables: {_nft('list', 'tables')}"
                )
            await asyncio.sleep(1)
        _log(f"the host's firewall holds {total} ports")

    # --- the kernel ---------------------------------------------------------------------------------

    def _ingress_map(self) -> dict[str, str]:
        """tap -> the chain its ingress goes to (none while the table is not there)."""
        if f"table bridge {self.table}" not in _nft("list", "tables"):
            return {}
        text = _nft("list", "map", "bridge", self.table, "ingress_rules")
        return dict(re.findall(r'"(tap[0-9a-f-]+)"\s*:\s*goto\s+(\S+?)[,\s}]', text))

    def _chain_has(self, chain: str, needle: str) -> bool | None:
        """Whether the chain holds `needle`; None when the chain went between two listings (the
        table was replaced meanwhile: look again)."""
        try:
            return needle in _nft("list", "chain", "bridge", self.table, chain)
        except BenchError:
            return None

    def _set_has(self, group: str, address: str) -> bool:
        text = _nft("list", "set", "bridge", self.table, set_name(group, False))
        return re.search(rf"(?<![0-9.]){re.escape(address)}(?![0-9./])", text) is not None

    async def _until(self, check: Any, what: str, started: float) -> float:
        while not await asyncio.to_thread(check):
            if time.monotonic() - started > 60:
                raise BenchError(f"{what}: not in the host's nftables after 60 s")
            await asyncio.sleep(POLL)
        return time.monotonic() - started

    # --- the measurements ---------------------------------------------------------------------------

    async def measure(self) -> None:
        for k in range(self.args.changes):
            await self._rule_change(k)
            await self._member_change(k)

    async def _rule_change(self, k: int) -> None:
        group = self.groups[k % len(self.groups)]
        tap = tap_name(self.members[group][0])
        port = 20000 + k
        needle = f"dport {port} "
        rule = {
            "security_group_id": group, "direction": "ingress", "protocol": "tcp", "port_range_min": port,
            "port_range_max": port, "remote_ip_prefix": "192.0.2.0/24",
        }  # fmt: skip

        def ruled(present: bool) -> bool:
            chain = self._ingress_map().get(tap)
            return chain is not None and self._chain_has(chain, needle) is present

        rules = "/networking/v2.0/security-group-rules"
        started = time.monotonic()
        made = await self.call("POST", rules, {"security_group_rule": rule}, expect=201)
        self.times["rule added"].append(await self._until(lambda: ruled(True), f"rule {port}", started))
        started = time.monotonic()
        await self.call("DELETE", f"{rules}/{made['security_group_rule']['id']}", expect=204)
        self.times["rule deleted"].append(
            await self._until(lambda: ruled(False), f"rule {port} gone", started)
        )

    async def _member_change(self, k: int) -> None:
        member_of = self.groups[(k + 1) % len(self.groups)]  # the remote group of group k's rule
        started = time.monotonic()
        body = {"port": {"network_id": self.network_id, "security_groups": [member_of]}}
        new = (await self.call("POST", "/networking/v2.0/ports", body, expect=201))["port"]
        address = new["fixed_ips"][0]["ip_address"]
        self.times["member added"].append(
            await self._until(lambda: self._set_has(member_of, address), f"member {address}", started)
        )
        started = time.monotonic()
        await self.call("DELETE", f"/networking/v2.0/ports/{new['id']}", expect=204)
        self.times["member deleted"].append(
            await self._until(
                lambda: not self._set_has(member_of, address), f"member {address} gone", started
            )
        )

    def report(self) -> str:
        lines = [
            f"{self.args.ports} ports on one host in {self.args.groups} groups, "
            f"{self.args.changes} changes of each kind",
            f"{'change':<16}{'p50 ms':>9}{'p95 ms':>9}{'p99 ms':>9}{'max ms':>9}",
        ]
        for series in SERIES:
            values = self.times[series]
            if not values:
                continue
            cells = [percentile(values, p) * 1000 for p in (50, 95, 99)] + [max(values) * 1000]
            lines.append(f"{series:<16}" + "".join(f"{v:>9.0f}" for v in cells))
        return "\n".join(lines)

    async def run(self) -> None:
        await self.start()
        try:
            await self.prepare()
            await self.measure()
        finally:
            if self.session is not None:
                await self.session.close()

    async def cleanup(self) -> list[str]:
        problems = []
        try:
            await self.cloud.stop()
        except ScratchError as exc:
            problems.append(str(exc))
        try:
            await self.services.drop()
        except ScratchError as exc:
            problems.append(str(exc))
        if self.table:
            listed = subprocess.run(
                ["nft", "list", "tables"], capture_output=True, text=True, timeout=60
            ).stdout
            problems += [f"nftables table {line.split()[1]} {self.table} left" for line in listed.splitlines()
                         if line.endswith(" " + self.table)]  # fmt: skip
        return problems


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.security_groups", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--ports", type=int, default=1000, help="VM ports on the host (default 1000)")
    parser.add_argument("--groups", type=int, default=100, help="security groups they are in (default 100)")
    parser.add_argument("--changes", type=int, default=50, help="changes of each kind measured (default 50)")
    args = parser.parse_args(argv)
    if args.ports < args.groups or args.groups < 2 or args.changes < 1:
        parser.error("--groups at least 2, --ports at least --groups, --changes at least 1")
    if os.geteuid() != 0:
        parser.error("must run as root (bridges, nftables, rabbitmqctl)")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    given = sys.argv[1:] if argv is None else argv
    bench = Bench(args)
    failed: BaseException | None = None

    async def run() -> None:
        task = asyncio.current_task()
        assert task is not None
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)
        try:
            await bench.run()
        finally:
            problems.extend(await bench.cleanup())

    problems: list[str] = []
    try:
        asyncio.run(run())
    except BaseException as exc:  # noqa: BLE001 - reported after the cleanup
        failed = exc
    for problem in problems:
        _log(f"CLEANUP PROBLEM: {problem}")
    interrupted = isinstance(failed, (KeyboardInterrupt, asyncio.CancelledError))
    if failed is None:
        print(f"$ {shlex.join([sys.executable, '-m', 'bench.security_groups', *given])}")
        print(bench.report())
    return exit_code(interrupted=interrupted, failed=failed, problems=problems)


if __name__ == "__main__":
    sys.exit(main())
