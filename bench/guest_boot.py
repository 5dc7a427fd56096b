"""`python -m bench.guest_boot --runs N`: how long a real guest takes from `server create` to
reading its own metadata, against the bare-libvirt floor for the very same guest.

The bench starts a cloud of its own (actorstack/scratch.py: `actorstack up --virt qemu --hosts 1`
as a subprocess, on a fresh PostgreSQL database and RabbitMQ vhost named `bench_guest_<hex>`,
with a state directory `/tmp/bench-guest-<hex>`), makes a network, a subnet and a keypair, and
then, N times:

1. actorstack: t0, POST /servers (`actorstack-test`, m1.micro, the network, the key), then the
   console log through the API (os-getConsoleOutput) every 0.2 s until the guest's line
   `actorstack-guest: meta_data.json {…}` carrying the server's uuid shows up. The server's status
   is read on the same ticks until it is ACTIVE.
2. bare libvirt: the server's domain XML (`virsh dumpxml --inactive`), then `virsh destroy` of the
   server's domain (the server row stays: the power-state sync turns it SHUTOFF, and its tap,
   bridge, dnsmasq and metadata listener stay, because the host's network converger keeps the
   taps of every server that is not deleted). The XML gets a new name, no uuid, a new console
   file and new disks (a fresh qcow2 overlay on the same image-cache file for the root disk),
   and keeps the same `<interface>` (same tap, same MAC: the metadata service answers only the
   port's MAC and address, so the guest reads the server's metadata). Then the time from just
   before `virsh create` (a transient domain) to the same marker in that console file, read
   every 0.2 s as well.
3. the bare domain is destroyed and its files removed, and the server is deleted.

Everything the bench made is removed on the way out, also on failure, Ctrl-C or SIGTERM:
bare domains, servers (through the API, so the host agent unplugs their taps and the converger
removes bridge, namespace and dnsmasq), keypair, subnet and network, the cloud (SIGTERM), then
whatever the cloud could not remove (links tagged with this cloud's owner tag, its qdhcp
namespace, its dnsmasq, `instance-<id>` domains of its servers), the database, the vhost and
the state directory. The bench then checks the host for anything left and says so.

Must run as root (networking, libvirt, rabbitmqctl), with PostgreSQL on 127.0.0.1:5432 (trust)
and RabbitMQ on 127.0.0.1:5672 (guest/guest), like the tests.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable
from pathlib import Path
from typing import Any

from actorstack.scratch import ScratchServices, cli_argv
from bench.common import BenchError, exit_code
from bench.common import log as _log

VIRSH = ("virsh", "-c", "qemu:///system")
IMAGE = "actorstack-test"
GUEST = "actorstack-guest: "
MARKER = GUEST + "meta_data.json "
PHASES = (("boot", GUEST + "boot "), ("lease", GUEST + "lease "))  # earlier lines, for the breakdown
POLL = 0.2


def _run(
    argv: list[str] | tuple[str, ...], *, timeout: float = 120, check: bool = True
) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(list(argv), capture_output=True, text=True, timeout=timeout)
    if check and result.returncode != 0:
        why = (result.stderr or result.stdout).strip()
        raise BenchError(f"{shlex.join(argv)} exited {result.returncode}: {why}")
    return result


def _virsh(*args: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return _run([*VIRSH, *args], check=check, timeout=timeout)


def _console_times(text: str, server_id: str, seen: dict[str, float], elapsed: float) -> bool:
    """Record the first sighting of each phase line; True once the metadata marker for this
    server is there (its JSON parses and names the server's uuid)."""
    done = False
    for raw in text.splitlines():
        line = raw.strip("\r")
        for phase, prefix in PHASES:
            if phase not in seen and line.startswith(prefix):
                seen[phase] = elapsed
        if line.startswith(MARKER + "failed"):
            raise BenchError(f"the guest could not read its metadata: {line}")
        if line.startswith(MARKER):
            try:
                doc = json.loads(line[len(MARKER) :])
            except ValueError:
                continue  # a line still being written, or one a kernel message broke
            if isinstance(doc, dict) and doc.get("uuid") == server_id:
                done = True
    if done:
        seen["marker"] = elapsed
    return done


def _poll(
    read: Callable[[], str | None],
    server_id: str,
    t0: float,
    timeout: float,
    what: str,
    also: Callable[[float], None] | None = None,
) -> dict[str, float]:
    """Read the console every POLL seconds until the marker; the phases' times since t0."""
    seen: dict[str, float] = {}
    tick = time.monotonic()
    while True:
        text = read()
        now = time.monotonic()
        if text and _console_times(text, server_id, seen, now - t0):
            return seen
        if also is not None:
            also(now)
        if now - t0 > timeout:
            tail = "\n".join((text or "").splitlines()[-15:])
            raise BenchError(f"{what}: no metadata marker after {timeout:.0f}s; console ends with:\n{tail}")
        tick += POLL
        time.sleep(max(0.0, tick - time.monotonic()))


def _qemu_img_info(path: str) -> dict[str, Any]:
    return json.loads(_run(["qemu-img", "info", "-U", "--output=json", path]).stdout)


def _links() -> list[dict[str, Any]]:
    return json.loads(_run(["ip", "-j", "link", "show"], check=False).stdout or "[]")


def _fresh_disks(devices: ET.Element, where: Path) -> None:
    """Point the domain's disks at new files in `where`: the root disk a pristine overlay on the
    same image-cache file, ephemeral and swap disks blank, as the host agent makes them."""
    for disk in devices.findall("disk"):
        source = disk.find("source")
        if disk.get("device") != "disk" or source is None or source.get("file") is None:
            continue
        old = str(source.get("file"))
        info = _qemu_img_info(old)
        new = where / Path(old).name
        backing = info.get("full-backing-filename") or info.get("backing-filename")
        if backing:  # the root disk: a pristine overlay on the same image-cache file
            fmt = info.get("backing-filename-format") or _qemu_img_info(backing)["format"]
            _run(
                [
                    "qemu-img",
                    "create",
                    "-q",
                    "-f",
                    "qcow2",
                    "-b",
                    backing,
                    "-F",
                    fmt,
                    str(new),
                    str(info["virtual-size"]),
                ]
            )
        else:  # ephemeral or swap: blank, as the host agent makes them
            _run(["qemu-img", "create", "-q", "-f", info["format"], str(new), str(info["virtual-size"])])
        source.set("file", str(new))
        for stale in disk.findall("backingStore"):
            disk.remove(stale)


class Bench:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.tag = secrets.token_hex(4)
        self.name = f"bench_guest_{self.tag}"  # the database and the vhost
        self.state_dir = Path(f"/tmp/bench-guest-{self.tag}")
        self.services = ScratchServices(self.name, state_dir=self.state_dir)
        # A session of its own: a Ctrl-C in the terminal reaches the bench only, which deletes
        # the servers through the cloud before it stops the cloud.
        self.cloud = self.services.cloud(stop_timeout=60, new_session=True)
        self.url = self.cloud.url
        self.password = self.cloud.password
        self.log_path = self.state_dir / "up.log"
        self.up_args = [
            "up",
            "--virt",
            "qemu",
            "--hosts",
            "1",
            "--listen",
            self.cloud.listen,
            "--log-format",
            "json",
        ]
        self.up_argv = cli_argv(*self.up_args)
        self.conn: Any = None
        self.network_id: str | None = None
        self.subnet_id: str | None = None
        self.keypair: str | None = None
        self.servers: set[str] = set()
        self.all_servers: set[str] = set()
        self.bare: dict[str, Path] = {}  # transient domain -> its directory
        self.results: list[dict[str, Any]] = []
        self.domain_type: str | None = None

    # --- the cloud ----------------------------------------------------------------------------

    def start(self) -> None:
        asyncio.run(self.services.create())
        _log(
            f"starting the cloud: {shlex.join(self.up_argv)} "
            f"(state {self.state_dir}, database and vhost {self.name})"
        )
        self.cloud.start("up", *self.up_args)
        asyncio.run(self.cloud.wait_ready(hosts=1, storage=False, timeout=self.args.start_timeout))

        import openstack

        self.conn = openstack.connect(
            auth_url=f"{self.url}/identity/v3",
            username="admin",
            password=self.password,
            project_name="admin",
            user_domain_name="Default",
            project_domain_name="Default",
            region_name="RegionOne",
            identity_api_version="3",
            api_timeout=60,
            load_yaml_config=False,
            load_envvars=False,
        )
        self.image = self._wait("the image actorstack-test to be active", self._active_image)
        self.flavor = self.conn.compute.find_flavor(self.args.flavor, ignore_missing=False)

        net = self.conn.network.create_network(name=f"bench-{self.tag}")
        self.network_id = net.id
        subnet = self.conn.network.create_subnet(
            network_id=net.id, name=f"bench-{self.tag}", ip_version=4, cidr=self.args.cidr
        )
        self.subnet_id = subnet.id
        key = self.state_dir / "id_ed25519"
        _run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", f"bench-{self.tag}", "-f", str(key)])
        self.public_key = key.with_suffix(".pub").read_text().strip()
        self.keypair = self.conn.compute.create_keypair(
            name=f"bench-{self.tag}", public_key=self.public_key
        ).name
        _log(f"cloud up at {self.url}: image {self.image.id}, network {net.id} ({self.args.cidr})")

    def _check_alive(self) -> None:
        for up in self.cloud.role("up"):
            if not up.alive:
                raise BenchError(f"actorstack up exited ({up.returncode})")

    def _wait(self, what: str, probe: Callable[[], Any], timeout: float = 120) -> Any:
        deadline = time.monotonic() + timeout
        while True:
            self._check_alive()
            value = probe()
            if value:
                return value
            if time.monotonic() > deadline:
                raise BenchError(f"timed out after {timeout:.0f}s waiting for {what}")
            time.sleep(0.5)

    def _active_image(self) -> Any:
        image = self.conn.image.find_image(IMAGE)
        return image if image is not None and image.status == "active" else None

    # --- one run --------------------------------------------------------------------------------

    def run_once(self, index: int) -> dict[str, Any]:
        from openstack import exceptions

        timeout = self.args.timeout
        t0 = time.monotonic()
        server = self.conn.compute.create_server(
            name=f"bench-{self.tag}-{index}",
            image_id=self.image.id,
            flavor_id=self.flavor.id,
            networks=[{"uuid": self.network_id}],
            key_name=self.keypair,
        )
        posted = time.monotonic() - t0
        sid = server.id
        self.servers.add(sid)
        self.all_servers.add(sid)
        active: dict[str, float] = {}

        def console() -> str | None:
            try:
                return self.conn.compute.get_server_console_output(sid).get("output") or ""
            except (exceptions.NotFoundException, exceptions.ConflictException):
                return None  # no domain (or no console file) yet

        def status(now: float) -> None:
            self._check_alive()
            if "active" in active:
                return
            s = self.conn.compute.get_server(sid)
            if s.status == "ACTIVE":
                active["active"] = now - t0
            elif s.status == "ERROR":
                raise BenchError(f"server {sid} went to ERROR: {s.fault}")

        cloud = _poll(console, sid, t0, timeout, f"server {sid}", also=status)
        if "active" not in active:  # the marker came first on the last tick: ask once more
            s = self.conn.compute.get_server(sid)
            if s.status == "ACTIVE":
                active["active"] = time.monotonic() - t0
        cloud.update(active, post=posted)
        _log(
            f"run {index}: actorstack create -> marker {cloud['marker']:.2f}s "
            f"(ACTIVE {cloud.get('active', float('nan')):.2f}s)"
        )

        bare = self._bare_run(sid, timeout)
        _log(f"run {index}: bare virsh create -> marker {bare['marker']:.2f}s")

        self.conn.compute.delete_server(sid)
        self.conn.compute.wait_for_delete(self.conn.compute.get_server(sid), interval=0.5, wait=120)
        self.servers.discard(sid)
        result = {"run": index, "server": sid, "actorstack": cloud, "bare": bare}
        self.results.append(result)
        return result

    def _bare_run(self, sid: str, timeout: float) -> dict[str, Any]:
        domain = f"instance-{sid}"
        definition = _virsh("dumpxml", "--inactive", domain).stdout
        root = ET.fromstring(definition)
        domain_type = root.get("type", "?")
        if self.domain_type not in (None, domain_type):
            raise BenchError(f"domain type changed from {self.domain_type} to {domain_type}")
        self.domain_type = domain_type
        _virsh("destroy", domain)  # the server row stays (it turns SHUTOFF), and so do its tap and DHCP

        name = f"bench-bare-{self.tag}-{secrets.token_hex(3)}"
        where = self.state_dir / name
        where.mkdir()
        os.chmod(where, 0o755)
        self.bare[name] = where
        root.find("name").text = name  # type: ignore[union-attr]
        for tag in ("uuid", "title"):
            element = root.find(tag)
            if element is not None:
                root.remove(element)
        devices = root.find("devices")
        if devices is None:
            raise BenchError(f"{domain} has no devices")
        console_log = where / "console.log"
        for tag in ("serial", "console"):
            for element in devices.findall(tag):
                source = element.find("source")
                if element.get("type") == "file" and source is not None:
                    source.set("path", str(console_log))
        _fresh_disks(devices, where)
        taps = [t.get("dev") for t in devices.findall("interface/target")]
        for tap in taps:
            if not Path(f"/sys/class/net/{tap}").exists():
                raise BenchError(f"the server's tap {tap} is gone after virsh destroy; cannot reuse it")
        xml_path = where / "domain.xml"
        xml_path.write_text(ET.tostring(root, encoding="unicode"))

        def console() -> str | None:
            try:
                return console_log.read_text(errors="replace")
            except FileNotFoundError:
                return None

        t0 = time.monotonic()
        _virsh("create", str(xml_path))
        started = time.monotonic() - t0
        seen = _poll(console, sid, t0, timeout, f"bare domain {name}", also=lambda now: self._check_alive())
        seen["started"] = started
        _virsh("destroy", name, check=False)
        shutil.rmtree(where, ignore_errors=True)
        self.bare.pop(name, None)
        return {**seen, "domain": name, "taps": taps}

    # --- cleaning up --------------------------------------------------------------------------------

    def cleanup(self) -> list[str]:
        """Remove everything; what could not be removed, as problems."""
        problems: list[str] = []

        def step(what: str, action: Callable[[], None]) -> None:
            try:
                action()
            except BaseException as exc:  # noqa: BLE001 - one failed step must not stop the others
                problems.append(f"{what}: {exc!r}")
                _log(f"cleanup: {what} failed: {exc!r}")

        cloud_alive = any(up.alive for up in self.cloud.role("up")) and self.conn is not None
        for name, where in list(self.bare.items()):
            step(
                f"bare domain {name}",
                lambda n=name, w=where: (
                    _virsh("destroy", n, check=False),
                    shutil.rmtree(w, ignore_errors=True),
                ),
            )
        if cloud_alive:
            step("servers", self._delete_servers)
            if self.keypair:
                step("keypair", lambda: self.conn.compute.delete_keypair(self.keypair, ignore_missing=True))
            if self.subnet_id:
                step("subnet", lambda: self.conn.network.delete_subnet(self.subnet_id, ignore_missing=True))
            if self.network_id:
                step(
                    "network", lambda: self.conn.network.delete_network(self.network_id, ignore_missing=True)
                )
            step("host networking", self._wait_host_clean)
        if self.cloud.processes:
            step("the cloud", lambda: asyncio.run(self.cloud.stop()))
        step("leftover domains", self._remove_domains)
        step("leftover networking", self._remove_networking)
        step("database, vhost and state dir", lambda: asyncio.run(self.services.drop()))
        left = self.leftovers()
        if left:
            problems.append("left on the host: " + ", ".join(left))
        return problems

    def _delete_servers(self) -> None:
        # Also a server whose POST was interrupted before its answer: they all carry our name.
        for server in self.conn.compute.servers():
            if server.name.startswith(f"bench-{self.tag}-"):
                self.servers.add(server.id)
                self.all_servers.add(server.id)
        for sid in list(self.servers):
            self.conn.compute.delete_server(sid, ignore_missing=True)
        for sid in list(self.servers):
            server = self.conn.compute.find_server(sid, ignore_missing=True)
            if server is not None:
                self.conn.compute.wait_for_delete(server, interval=0.5, wait=120)
            self.servers.discard(sid)

    def _wait_host_clean(self) -> None:
        """The converger removes bridge, namespace and dnsmasq once no tap needs them."""
        deadline = time.monotonic() + 60
        while self._kernel_leftovers():
            if time.monotonic() > deadline:
                left = ", ".join(self._kernel_leftovers())
                raise BenchError(f"host networking still there after 60 s: {left}")
            time.sleep(0.5)

    def _remove_domains(self) -> None:
        """Domains of our servers the cloud did not delete: by id, or by the title (the server's
        name, `bench-<tag>-<run>`) for a server whose id the bench never learnt."""
        names = {f"instance-{sid}" for sid in self.all_servers}
        for name in _virsh("list", "--all", "--name", check=False).stdout.split():
            if name.startswith("instance-") and name not in names:
                title = _virsh("desc", "--title", name, check=False).stdout.strip()
                if title.startswith(f"bench-{self.tag}-"):
                    names.add(name)
                    self.all_servers.add(name.removeprefix("instance-"))
        for name in names:
            if _virsh("domstate", name, check=False).returncode == 0:
                _virsh("destroy", name, check=False)
                _virsh("undefine", name, check=False)

    def _owner_links(self) -> list[str]:
        tag = f"actorstack:{self.name}:"
        return [link["ifname"] for link in _links() if tag in (link.get("ifalias") or "")]

    def _namespaces(self) -> list[str]:
        listed = _run(["ip", "netns", "list"], check=False).stdout.splitlines()
        names = [line.split()[0] for line in listed if line.strip()]
        tag = f"actorstack:{self.name}:"
        mine = []
        for ns in names:
            if self.network_id and ns == f"qdhcp-{self.network_id}":
                mine.append(ns)
            elif ns.startswith("qdhcp-"):
                out = _run(["ip", "-n", ns, "-j", "link", "show"], check=False).stdout or "[]"
                if any(tag in (link.get("ifalias") or "") for link in json.loads(out)):
                    mine.append(ns)
        return mine

    def _dnsmasqs(self) -> list[int]:
        found = []
        for proc in Path("/proc").iterdir():
            if not proc.name.isdigit():
                continue
            try:
                argv = (proc / "cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if argv and argv[0].endswith(b"dnsmasq") and any(str(self.state_dir).encode() in a for a in argv):
                found.append(int(proc.name))
        return found

    def _kernel_leftovers(self) -> list[str]:
        return (
            [f"link {n}" for n in self._owner_links()]
            + [f"namespace {n}" for n in self._namespaces()]
            + [f"dnsmasq pid {p}" for p in self._dnsmasqs()]
        )

    def _remove_networking(self) -> None:
        """What the cloud could not remove (it died, or was stopped with servers left): ours only."""
        for pid in self._dnsmasqs():
            os.kill(pid, signal.SIGTERM)
        for ns in self._namespaces():
            _run(["ip", "netns", "delete", ns], check=False)
        for name in self._owner_links():
            _run(["ip", "link", "delete", name], check=False)

    def leftovers(self) -> list[str]:
        left = self._kernel_leftovers()
        domains = _virsh("list", "--all", "--name", check=False).stdout.split()
        left += [
            f"domain {d}"
            for d in domains
            if d in self.bare
            or d.startswith(f"bench-bare-{self.tag}-")
            or d.removeprefix("instance-") in self.all_servers
        ]
        left += asyncio.run(self.services.leftovers())
        return left

    def log_tail(self, lines: int = 40) -> str:
        """The end of the cloud's log, without the API's one line per request."""
        try:
            text = self.log_path.read_text(errors="replace")
            kept = [line for line in text.splitlines() if '"event": "request"' not in line]
            return "\n".join(kept[-lines:])
        except OSError:
            return "(no log)"


# --- the report -----------------------------------------------------------------------------------


def _stats(values: list[float]) -> tuple[float, float, float]:
    return statistics.median(values), min(values), max(values)


def report(bench: Bench, command: str) -> dict[str, Any]:
    runs = bench.results
    cloud = [r["actorstack"]["marker"] for r in runs]
    bare = [r["bare"]["marker"] for r in runs]
    rows: list[tuple[str, list[float]]] = [
        ("actorstack: server create -> meta_data.json marker", cloud),
        ("bare libvirt: virsh create -> meta_data.json marker", bare),
        ("overhead: actorstack - bare (paired, per run)", [c - b for c, b in zip(cloud, bare, strict=True)]),
        (
            "  actorstack: server create -> ACTIVE",
            [r["actorstack"]["active"] for r in runs if "active" in r["actorstack"]],
        ),
        ("  actorstack: server create -> POST /servers answered", [r["actorstack"]["post"] for r in runs]),
        ("  bare libvirt: virsh create returned", [r["bare"]["started"] for r in runs]),
    ]
    for phase, _ in PHASES:
        rows.append(
            (
                f"  actorstack: create -> '{phase}' line",
                [r["actorstack"][phase] for r in runs if phase in r["actorstack"]],
            )
        )
        rows.append(
            (
                f"  bare libvirt: create -> '{phase}' line",
                [r["bare"][phase] for r in runs if phase in r["bare"]],
            )
        )
    kind = {"kvm": "kvm", "qemu": "qemu (TCG)"}.get(bench.domain_type or "", bench.domain_type or "?")
    summary = {
        "command": command,
        "up_command": shlex.join(bench.up_argv),
        "runs": len(runs),
        "domain_type": bench.domain_type,
        "poll_interval_s": POLL,
        "flavor": bench.args.flavor,
        "image": IMAGE,
        "stats": {
            label.strip(): dict(zip(("median", "min", "max"), _stats(v), strict=True))
            for label, v in rows
            if v
        },
        "runs_detail": runs,
    }
    if bench.args.json:
        print(json.dumps(summary, indent=2))
        return summary
    width = max(len(label) for label, _ in rows)
    print(
        f"\nguest boot: {len(runs)} run(s), domain type {kind}, flavor {bench.args.flavor}, image {IMAGE}, "
        f"console polled every {POLL}s"
    )
    print(f"{'':{width}}  {'median':>8} {'min':>8} {'max':>8}")
    for label, values in rows:
        if values:
            med, lo, hi = _stats(values)
            print(f"{label:{width}}  {med:7.2f}s {lo:7.2f}s {hi:7.2f}s")
    print("\nper run (s):  actorstack  bare  overhead")
    for r, c, b in zip(runs, cloud, bare, strict=True):
        print(f"  run {r['run']}:     {c:9.2f} {b:5.2f} {c - b:9.2f}")
    print(f"\ncommand: {command}")
    print(f"cloud:   {shlex.join(bench.up_argv)}")
    return summary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.guest_boot", description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--runs", type=int, default=5, help="servers to boot, one after the other (default 5)"
    )
    parser.add_argument("--flavor", default="m1.micro")
    parser.add_argument("--cidr", default="10.77.0.0/24", help="the bench network's subnet")
    parser.add_argument("--timeout", type=float, default=300, help="per guest, to its metadata marker (s)")
    parser.add_argument("--start-timeout", type=float, default=300, help="for the cloud to come up (s)")
    parser.add_argument("--json", action="store_true", help="print the results as JSON instead of a table")
    args = parser.parse_args(argv)
    if args.runs < 1:
        parser.error("--runs must be at least 1")
    if os.geteuid() != 0:
        parser.error("must run as root (networking, libvirt, rabbitmqctl)")
    given = sys.argv[1:] if argv is None else argv
    command = shlex.join([sys.executable, "-m", "bench.guest_boot", *given])

    def terminated(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, terminated)
    bench = Bench(args)
    failed: BaseException | None = None
    try:
        bench.start()
        for index in range(1, args.runs + 1):
            bench.run_once(index)
    except BaseException as exc:  # noqa: BLE001 - reported after the cleanup
        failed = exc
    finally:
        # Cleaning up must finish: a second Ctrl-C (or SIGTERM) would leave guests and links behind.
        signal.signal(signal.SIGINT, lambda *_: _log("cleaning up; please wait"))
        signal.signal(signal.SIGTERM, lambda *_: _log("cleaning up; please wait"))
        if failed is not None and not isinstance(failed, KeyboardInterrupt):
            _log(f"failed: {failed!r}\n--- the end of actorstack up's log ---\n{bench.log_tail()}")
        _log("cleaning up")
        problems = bench.cleanup()
        for problem in problems:
            _log(f"CLEANUP PROBLEM: {problem}")
        if not problems:
            _log(
                "cleaned up: no servers, domains, links, namespaces, dnsmasq, database, vhost "
                "or state dir left"
            )
    if bench.results:
        report(bench, command)
    return exit_code(interrupted=isinstance(failed, KeyboardInterrupt), failed=failed, problems=problems)


if __name__ == "__main__":
    sys.exit(main())
