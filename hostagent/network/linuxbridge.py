"""HostNetworking: the host side of networking on Linux bridges (Neutron's Linux-bridge agent,
with DHCP and metadata local to each host as OVN does them), level-triggered from the desired
state the control plane gives (`hostagent/control.py`: the internal API, never the database).

A converge pass reads the desired state in one snapshot (`desired.py`) and makes the kernel
match it: per network with a tap here, a bridge and the taps; with DHCP, the qdhcp namespace,
the DHCP port's veth, dnsmasq (`dnsmasq.py`) and a metadata listener (`metadata.py`). Then it
removes what is ours and no longer desired. A full pass runs at start (which is how links,
namespaces and dnsmasq left by an earlier run are adopted) and every `interval` seconds.
`plug` and `unplug` ask for a pass scoped to one server: its taps, and its networks' bridges
and DHCP, so a boot costs the same on a host with one tap or a thousand (pyroute2 spends about
a millisecond decoding a link: a full pass reads them all in one dump, which it uses both for
the taps it keeps and the links it removes). Passes never overlap: requests
that arrive during a pass are merged into the next one, which runs as a task of this object,
so a caller that gives up (cancelled) never leaves a pass half-done.

One network's failure (a name taken by a link that is not ours, dnsmasq refusing to start) is
that network's error, reported to `plug` for its servers; the others converge.

The firewall (security groups, `firewall.py` and `nftables.py`) is applied at the start of every
pass, before any tap is made or kept, from its own snapshot of the internal API: a port is never
on a bridge without its filter, and a pass whose firewall cannot be applied fails (fail closed).
Between passes, `refresh_firewall` (the `agent.refresh_firewall` nudge of the `security_group`
service) runs a firewall-only pass at once; passes of both kinds apply under one lock and read
inside it, so a later one never applies an older snapshot. A pass spends little on what did not
change: rows it has seen are not validated again (`firewall.Builder`), and the kernel gets one
transaction of what differs (`nftables.py`); a periodic pass replaces the tables whole every
FIREWALL_RESYNC seconds, which repairs whatever was changed behind the agent's back.

`unplug` must remove a server's taps at once, even while the database still wants them (a
spawn that failed; the server actor catches up a moment later): the server is left out of
the desired state for UNPLUG_GRACE seconds, unless it is plugged again.

Ownership (see `kernel.py`): links carry the owner tag; namespaces are recorded in the state
directory before they are made (or proven ours by a tagged link inside); dnsmasq is ours by
its pid file in our state directory. Nothing else is ever changed or removed.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import os
import shutil
import subprocess
import time
from collections.abc import Mapping
from collections.abc import Set as AbstractSet

import structlog
from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError

from hostagent.control import Control, ControlUnavailable
from hostagent.network import desired as want
from hostagent.network import dnsmasq, kernel
from hostagent.network import firewall as fw
from hostagent.network.base import Networking, NetworkingError, NetworkSettings, Vif
from hostagent.network.metadata import MetadataService
from hostagent.network.nftables import HostFirewall

log = structlog.get_logger("hostagent.network")

UNPLUG_GRACE = 30.0  # seconds an unplugged server's taps stay out of the desired state
FIREWALL_RESYNC = 300.0  # seconds between full replaces of the firewall by periodic passes
_FAILURES = (NetworkingError, NetlinkError, OSError, subprocess.SubprocessError, ControlUnavailable)


@dataclasses.dataclass(frozen=True)
class Scope:
    """What a plug or unplug pass looks at: some servers' taps and their networks (bridge, DHCP).
    A full pass (every network, every tap, every orphan) has no scope (None)."""

    networks: frozenset[str] = frozenset()
    taps: frozenset[str] = frozenset()

    def __or__(self, other: Scope) -> Scope:
        return Scope(self.networks | other.networks, self.taps | other.taps)


@dataclasses.dataclass
class _Pass:
    counts: collections.Counter[str]
    errors: dict[str, str]  # network id -> reason
    taps: set[str]  # the taps in place after the pass (of the networks it converged)


def _merge(a: Scope | None, b: Scope | None) -> Scope | None:
    return None if a is None or b is None else a | b


def _count(counts: collections.Counter[str], what: str, done: str | None) -> None:
    if done is not None:
        counts[f"{what}_{done}"] += 1


def _reason(exc: BaseException) -> str:
    return getattr(exc, "reason", None) or f"{type(exc).__name__}: {exc}"


_REMOVED = {
    "bridge": "bridges_removed",
    "tun": "taps_removed",
    "veth": "dhcp_ports_removed",
    "vxlan": "vxlans_removed",
}


class HostNetworking(Networking):
    def __init__(self, control: Control, settings: NetworkSettings) -> None:
        self.control = control
        self.settings = settings
        self._metadata = MetadataService(control, settings.metadata_port)
        self._unplugged: dict[str, float] = {}  # server id -> when
        self._taps: dict[str, tuple[str, str]] = {}  # tap -> (server id, network id), as last desired
        self._veths: dict[str, str] = {}  # network id -> its DHCP veth, as last desired
        self._vxlans: dict[str, str] = {}  # network id -> its VXLAN device, as last desired
        self._dnsmasq_pids: dict[str, int] = {}  # network id -> the dnsmasq we started or reloaded
        self._foreign: dict[str, int | None] = {}  # qdhcp namespaces proven not ours -> their inode
        self._problems: frozenset[str] = frozenset()
        self._dnsmasq_user = ("root", "root")
        self._pending: Scope | None = Scope()
        self._requested = 0
        self._current: asyncio.Task[tuple[int, _Pass]] | None = None
        self._periodic_task: asyncio.Task[None] | None = None
        self._running = False
        self._firewall = HostFirewall(settings.owner)
        self._firewall_builder = fw.Builder()
        self._firewall_replaced = -FIREWALL_RESYNC  # monotonic time of the last full replace
        self._firewall_lock = asyncio.Lock()
        self._firewall_wanted = asyncio.Event()
        self._firewall_task: asyncio.Task[None] | None = None
        self._firewall_problems: frozenset[str] = frozenset()
        self._firewall_present: bool | None = None  # whether our tables are there (None: not known)

    # --- lifecycle ----------------------------------------------------------------------------

    async def start(self) -> None:
        """Adopt what exists, converge once, then keep converging every `interval`."""
        if self._running:
            return
        self._dnsmasq_user = await asyncio.to_thread(self._prepare)
        self._running = True
        try:
            counts = await self.converge()
        except BaseException:
            await self.stop()
            raise
        log.info(
            "host networking started", owner=self.settings.owner, dnsmasq_user=self._dnsmasq_user[0], **counts
        )
        self._periodic_task = asyncio.create_task(self._periodic(), name="network converge loop")
        self._firewall_task = asyncio.create_task(self._firewall_loop(), name="firewall refresh loop")

    def _prepare(self) -> tuple[str, str]:
        self.settings.state_dir.mkdir(parents=True, exist_ok=True)
        return dnsmasq.privileges(self.settings.state_dir)

    async def stop(self) -> None:
        """Stop converging and serving metadata; with `remove_on_stop`, remove all that is ours."""
        self._running = False
        for task in (self._periodic_task, self._firewall_task):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        self._periodic_task = self._firewall_task = None
        if self._current is not None:
            await asyncio.wait([self._current])  # a pass in flight finishes; its outcome was theirs
        await self._metadata.close()
        if self.settings.remove_on_stop:
            result = _Pass(collections.Counter(), {}, set())
            await self._remove_undesired(want.Desired(networks={}, problems=frozenset()), result)
            if await asyncio.to_thread(self._firewall.remove):
                result.counts["firewall_removed"] += 1
            if result.counts:
                log.info("host networking removed", **result.counts)

    async def _periodic(self) -> None:
        while True:
            await asyncio.sleep(self.settings.interval)
            try:
                counts = await self.converge()
            except _FAILURES as exc:
                log.warning("network converge pass failed", reason=_reason(exc))
                continue
            except Exception:  # a bug in one pass must not end reconciliation: logged, next pass
                log.exception("network converge pass failed unexpectedly")
                continue
            if counts:
                log.info("network converged", **counts)

    # --- the interface ------------------------------------------------------------------------

    async def converge(self) -> dict[str, int]:
        result = await self._request(None)
        return dict(result.counts)

    async def plug(self, server_id: str) -> list[Vif]:
        self._unplugged.pop(server_id, None)
        rows = await self.control.server_ports(server_id, sorted(self.settings.hosts))
        if not rows:
            return []
        result = await self._request(
            Scope(
                frozenset(row["network_id"] for row in rows),
                frozenset(want.tap_name(row["port_id"]) for row in rows),
            )
        )
        vifs = []
        for row in rows:
            network_id, tap = row["network_id"], want.tap_name(row["port_id"])
            if network_id in result.errors:
                raise NetworkingError(f"network {network_id}: {result.errors[network_id]}")
            if tap not in result.taps:
                raise NetworkingError(
                    f"port {row['port_id']} of server {server_id} is not wanted on this "
                    "host (its server is not here, or is being deleted)"
                )
            vifs.append(
                Vif(
                    port_id=row["port_id"],
                    network_id=network_id,
                    mac_address=row["mac"],
                    tap=tap,
                    bridge=want.bridge_name(network_id),
                    mtu=row["mtu"],
                )
            )
        return vifs

    async def unplug(self, server_id: str) -> None:
        self._unplugged[server_id] = time.monotonic()
        rows = await self.control.bound_ports(server_id, sorted(self.settings.hosts))
        taps = {want.tap_name(row["id"]): row["network_id"] for row in rows}
        taps.update({tap: net for tap, (server, net) in self._taps.items() if server == server_id})
        if not taps:
            return
        await self._request(Scope(frozenset(taps.values()), frozenset(taps)))
        left = await asyncio.to_thread(self._existing, set(taps))
        if left:
            raise NetworkingError(
                f"the taps {', '.join(sorted(left))} of server {server_id} could not be removed"
            )

    def _links(self) -> dict[str, kernel.Link]:
        with kernel.iproute() as ipr:
            return {link.name: link for link in kernel.links(ipr)}

    def _existing(self, names: set[str]) -> set[str]:
        with kernel.iproute() as ipr:
            return {
                name
                for name in names
                if (link := kernel.find(ipr, name)) is not None and link.alias == self.settings.owner
            }

    # --- the firewall ---------------------------------------------------------------------------

    def refresh_firewall(self) -> None:
        self._firewall_wanted.set()

    async def _firewall_loop(self) -> None:
        """Firewall passes on request (a security group changed): one at a time, requests that
        arrive during one sharing the next."""
        while True:
            await self._firewall_wanted.wait()
            self._firewall_wanted.clear()
            try:
                counts = await self._apply_firewall()
            except _FAILURES as exc:
                log.warning("firewall pass failed", reason=_reason(exc))
                continue
            except Exception:  # a bug in one pass must not end the loop: logged, next request
                log.exception("firewall pass failed unexpectedly")
                continue
            if counts:
                log.info("firewall converged", **counts)

    async def _apply_firewall(self, *, resync: bool = False) -> dict[str, int]:
        """Read the desired firewall of this kernel's ports and make the kernel's match it. The
        read happens under the lock, so a later pass never applies an older snapshot. With
        `resync` (a periodic pass), the tables are replaced whatever changed once FIREWALL_RESYNC
        seconds have passed since the last replace."""
        async with self._firewall_lock:
            rows = await self.control.desired_firewall(sorted(self.settings.hosts))
            spec = await asyncio.to_thread(self._firewall_builder.build, rows)
            for problem in sorted(spec.problems - self._firewall_problems):
                log.warning("left out of the host's firewall", problem=problem)
            self._firewall_problems = spec.problems
            if not spec.ports and not spec.blocked:
                # No port to filter: no table kept (as no bridge is kept for no tap).
                if self._firewall_present is False:
                    return {}
                removed = await asyncio.to_thread(self._firewall.remove)
                self._firewall_present = False
                return {"firewall_removed": 1} if removed else {}
            self._firewall_present = True
            full = resync and time.monotonic() - self._firewall_replaced >= FIREWALL_RESYNC
            counts = await asyncio.to_thread(self._firewall.apply, spec, full=full)
            if "firewall_replaced" in counts:
                self._firewall_replaced = time.monotonic()
            return counts

    # --- passes -------------------------------------------------------------------------------

    async def _request(self, scope: Scope | None) -> _Pass:
        """A pass over `scope` that starts after this call; passes never overlap."""
        if not self._running:
            raise NetworkingError("host networking is not running")
        self._pending = _merge(self._pending, scope)
        self._requested += 1
        ticket = self._requested
        while True:
            task = self._current
            if task is None or task.done():
                if not self._running:
                    raise NetworkingError("host networking stopped")
                task = self._current = asyncio.create_task(self._run_pass(), name="network converge pass")
                task.add_done_callback(lambda t: t.cancelled() or t.exception())
            covered, result = await asyncio.shield(task)
            if covered >= ticket:
                return result

    async def _run_pass(self) -> tuple[int, _Pass]:
        scope, self._pending = self._pending, Scope()
        covered = self._requested
        try:
            return covered, await self._pass(scope)
        except BaseException:
            self._pending = _merge(self._pending, scope)  # the next pass does it
            raise

    async def _pass(self, scope: Scope | None) -> _Pass:
        now = time.monotonic()
        self._unplugged = {s: t for s, t in self._unplugged.items() if now - t < UNPLUG_GRACE}
        desired = await want.load(
            self.control, self.settings.hosts, self._unplugged, self.settings.namespace_prefix
        )
        for problem in sorted(desired.problems - self._problems):
            log.warning("left out of the host's networking", problem=problem)
        self._problems = desired.problems
        result = _Pass(collections.Counter(), {}, set())
        # Every port's filter is in place before its tap is: a port is never on a bridge unfiltered
        # (a failure here fails the pass, and the plug with it).
        result.counts.update(await self._apply_firewall(resync=scope is None))
        # A full pass looks at every link: one dump, for its taps and for what it removes.
        seen = None if scope is not None else await asyncio.to_thread(self._links)
        for net in desired.networks.values():
            if scope is not None and net.id not in scope.networks:
                continue
            taps = net.taps if scope is None else tuple(t for t in net.taps if t.name in scope.taps)
            try:
                await self._ensure_network(net, taps, result.counts, seen)
            except _FAILURES as exc:
                result.errors[net.id] = _reason(exc)
                result.counts["errors"] += 1
                log.warning("network not converged", network_id=net.id, reason=_reason(exc))
            else:
                result.taps.update(tap.name for tap in taps)
        owners = {tap.name: (tap.server_id, tap.network_id) for tap in desired.taps().values()}
        veths = {net.id: net.dhcp.veth for net in desired.networks.values() if net.dhcp is not None}
        vxlans = {net.id: name for net in desired.networks.values() if (name := self._vxlan_of(net))}
        if scope is None:  # what a full pass does not find desired, it removes
            self._taps, self._veths = owners, veths
            await self._remove_undesired(desired, result, seen)
            self._vxlans = vxlans
        else:
            self._taps.update(owners)
            self._veths.update(veths)
            await self._remove_out_of(desired, scope, result)
            self._vxlans.update(vxlans)
        return result

    def _network_dir(self, network_id: str) -> dnsmasq.Paths:
        return dnsmasq.Paths(self.settings.state_dir / network_id)

    async def _ensure_network(
        self,
        net: want.NetworkSpec,
        taps: tuple[want.TapSpec, ...],
        counts: collections.Counter[str],
        seen: Mapping[str, kernel.Link] | None,
    ) -> None:
        counts.update(await asyncio.to_thread(self._ensure_links, net, taps, seen))
        if net.dhcp is not None:
            await self._ensure_dnsmasq(net.dhcp, counts)
            if await self._metadata.ensure(net.id, net.dhcp.namespace):
                counts["listeners_started"] += 1

    def _ensure_links(
        self, net: want.NetworkSpec, taps: tuple[want.TapSpec, ...], seen: Mapping[str, kernel.Link] | None
    ) -> collections.Counter[str]:
        """The network's links as desired. `seen`: every link, as a full pass's dump found them."""
        owner = self.settings.owner
        counts: collections.Counter[str] = collections.Counter()
        with kernel.iproute() as ipr:
            bridge, done = kernel.ensure_bridge(ipr, net.bridge, net.mtu, owner)
            _count(counts, "bridges", done)
            for tap in taps:
                done = kernel.ensure_tap(ipr, tap.name, tap.host_mac, bridge, net.mtu, tap.up, owner, seen)
                _count(counts, "taps", done)
            vxlan = self._vxlan_of(net)
            if vxlan is not None and net.vni is not None and self.settings.tunnel_ip is not None:
                link, done = kernel.ensure_vxlan(
                    ipr, vxlan, net.vni, self.settings.tunnel_ip, bridge, net.mtu, owner
                )
                _count(counts, "vxlans", done)
                added, removed = kernel.sync_fdb(ipr, link, net.fdb())
                counts["fdb_added"] += added
                counts["fdb_removed"] += removed
                added, removed = kernel.sync_neighbours(ipr, link, net.neighbours())
                counts["neighbours_added"] += added
                counts["neighbours_removed"] += removed
            if net.dhcp is not None:
                dhcp = net.dhcp
                paths = self._network_dir(net.id)
                paths.directory.mkdir(parents=True, exist_ok=True)
                paths.directory.chmod(0o755)
                done = kernel.ensure_namespace(dhcp.namespace, paths.directory / "netns", owner)
                _count(counts, "namespaces", done)
                done = kernel.ensure_dhcp_veth(
                    ipr,
                    dhcp.namespace,
                    dhcp.veth,
                    dhcp.interface,
                    dhcp.mac,
                    net.mtu,
                    dhcp.addresses,
                    bridge,
                    owner,
                )
                _count(counts, "dhcp_ports", done)
                veth = kernel.find(ipr, dhcp.veth)
                if vxlan is not None and veth is not None:
                    kernel.isolate_port(ipr, veth.index)  # its answers stay on this host
        return counts

    def _vxlan_of(self, net: want.NetworkSpec) -> str | None:
        """The network's VXLAN device here: only with an underlay (a tunnel address)."""
        return net.vxlan if self.settings.tunnel_ip is not None else None

    async def _ensure_dnsmasq(self, spec: want.DhcpSpec, counts: collections.Counter[str]) -> None:
        paths = self._network_dir(spec.network_id)
        argv = tuple(dnsmasq.command(spec, paths, *self._dnsmasq_user))

        def files_and_process() -> tuple[bool, dnsmasq.Running | None, int | None]:
            changed = dnsmasq.write_if_changed(paths.host, dnsmasq.hosts_file(spec))
            changed = dnsmasq.write_if_changed(paths.opts, dnsmasq.opts_file(spec)) or changed
            return changed, dnsmasq.running(paths), kernel.namespace_inode(spec.namespace)

        changed, proc, inode = await asyncio.to_thread(files_and_process)
        if proc is not None and proc.argv == argv and proc.namespace_inode == inode:
            if changed or self._dnsmasq_pids.get(spec.network_id) != proc.pid:
                await asyncio.to_thread(dnsmasq.reload, proc.pid)  # adopted, or new files
                counts["dnsmasq_reloaded"] += 1
            self._dnsmasq_pids[spec.network_id] = proc.pid
            return
        if proc is not None:
            await asyncio.to_thread(dnsmasq.stop, proc.pid)
            counts["dnsmasq_stopped"] += 1
        self._dnsmasq_pids[spec.network_id] = await asyncio.to_thread(
            dnsmasq.start, paths, spec.namespace, list(argv)
        )
        counts["dnsmasq_started"] += 1

    # --- removal ------------------------------------------------------------------------------

    async def _remove_undesired(
        self, desired: want.Desired, result: _Pass, seen: Mapping[str, kernel.Link] | None = None
    ) -> None:
        """A full pass: remove all that is ours and not desired, DHCP stacks first, then links
        (of those `seen`, the pass's dump of every link, if it has one)."""
        with_dhcp = {net.id for net in desired.networks.values() if net.dhcp is not None}
        stacks = await asyncio.to_thread(self._stacks)
        await self._remove_stacks((stacks | self._metadata.networks()) - with_dhcp, result.counts)
        wanted = {tap.name for tap in desired.taps().values()}
        for net in desired.networks.values():
            wanted.add(net.bridge)
            if net.dhcp is not None:
                wanted.add(net.dhcp.veth)
            vxlan = self._vxlan_of(net)
            if vxlan is not None:
                wanted.add(vxlan)
        removed = await asyncio.to_thread(self._remove_links, wanted, result.counts, seen)
        self._forget(removed)

    async def _remove_out_of(self, desired: want.Desired, scope: Scope, result: _Pass) -> None:
        """A plug or unplug pass: remove the scope's taps that are not desired, and the bridge
        and DHCP of its networks that no longer need them; nothing else is looked at."""
        gone = {n for n in scope.networks if n not in desired.networks}
        without_dhcp = {n for n in scope.networks if n in gone or desired.networks[n].dhcp is None}
        stacks = {n for n in without_dhcp if (self.settings.state_dir / n).is_dir()}
        await self._remove_stacks(stacks | (self._metadata.networks() & without_dhcp), result.counts)
        names = (scope.taps - desired.taps().keys()) | {want.bridge_name(n) for n in gone}
        names |= {self._veths[n] for n in without_dhcp if n in self._veths}
        names |= {self._vxlans.pop(n) for n in gone if n in self._vxlans}
        removed = await asyncio.to_thread(self._remove_named, names, result.counts)
        self._forget(removed)

    def _forget(self, removed: list[str]) -> None:
        for name in removed:
            self._taps.pop(name, None)
        self._veths = {n: veth for n, veth in self._veths.items() if veth not in removed}

    async def _remove_stacks(self, network_ids: set[str], counts: collections.Counter[str]) -> None:
        for network_id in sorted(network_ids):
            try:
                await self._remove_stack(network_id, counts)
            except _FAILURES as exc:
                counts["errors"] += 1
                log.warning("could not remove a network's DHCP", network_id=network_id, reason=_reason(exc))

    def _stacks(self) -> set[str]:
        """The networks that have DHCP state of ours here: a state directory, or a qdhcp
        namespace holding a link of ours (looked into once: one that holds none is remembered
        as foreign while it is the same namespace)."""
        ids = set()
        with contextlib.suppress(FileNotFoundError):
            ids = {p.name for p in self.settings.state_dir.iterdir() if p.is_dir() and want.valid_id(p.name)}
        present = kernel.namespaces()
        self._foreign = {name: inode for name, inode in self._foreign.items() if name in present}
        for name in present:
            network_id = name.removeprefix(self.settings.namespace_prefix)
            if network_id == name or network_id in ids or not want.valid_id(network_id):
                continue
            inode = kernel.namespace_inode(name)
            if name in self._foreign and self._foreign[name] == inode:
                continue
            if kernel.namespace_has_link_of(name, self.settings.owner):
                ids.add(network_id)
            else:
                self._foreign[name] = inode
        return ids

    async def _remove_stack(self, network_id: str, counts: collections.Counter[str]) -> None:
        if await self._metadata.remove(network_id):
            counts["listeners_stopped"] += 1
        paths = self._network_dir(network_id)
        proc = await asyncio.to_thread(dnsmasq.running, paths)
        if proc is not None:
            await asyncio.to_thread(dnsmasq.stop, proc.pid)
            counts["dnsmasq_stopped"] += 1
        self._dnsmasq_pids.pop(network_id, None)
        namespace = want.namespace_name(network_id, self.settings.namespace_prefix)
        if await asyncio.to_thread(self._owns_namespace, namespace, paths.directory / "netns"):
            await asyncio.to_thread(kernel.remove_namespace, namespace)
            counts["namespaces_removed"] += 1
        await asyncio.to_thread(shutil.rmtree, paths.directory, True)

    def _owns_namespace(self, name: str, marker: os.PathLike[str]) -> bool:
        if kernel.namespace_inode(name) is None:
            return False
        return os.path.exists(marker) or kernel.namespace_has_link_of(name, self.settings.owner)

    def _remove_links(
        self, wanted: set[str], counts: collections.Counter[str], seen: Mapping[str, kernel.Link] | None
    ) -> list[str]:
        """Delete our links that are not wanted: ports first, then bridges. Those `seen` a moment
        ago will do (each is looked at again before it goes): a link made since is wanted."""
        with kernel.iproute() as ipr:
            found = seen.values() if seen is not None else kernel.links(ipr)
            doomed = [link for link in found if link.alias == self.settings.owner and link.name not in wanted]
            doomed.sort(key=lambda link: link.kind == "bridge")
            return self._delete(ipr, doomed, counts)

    def _remove_named(self, names: AbstractSet[str], counts: collections.Counter[str]) -> list[str]:
        """Delete these links, those that exist and are ours: ports first, then bridges."""
        with kernel.iproute() as ipr:
            found = [link for name in names if (link := kernel.find(ipr, name)) is not None]
            doomed = [link for link in found if link.alias == self.settings.owner]
            doomed.sort(key=lambda link: link.kind == "bridge")
            return self._delete(ipr, doomed, counts)

    def _delete(self, ipr: IPRoute, links: list[kernel.Link], counts: collections.Counter[str]) -> list[str]:
        removed = []
        for link in links:
            try:
                if kernel.delete_owned(ipr, link, self.settings.owner):
                    counts[_REMOVED.get(link.kind or "", "links_removed")] += 1
                    removed.append(link.name)
            except NetlinkError as exc:
                counts["errors"] += 1
                log.warning("could not remove a link", link=link.name, reason=_reason(exc))
        return removed
