"""dnsmasq: one per network per host, DHCP only (no DNS), inside the network's qdhcp namespace.

Its files live in the network's state directory (Neutron's layout):

    <state_dir>/<network id>/host      dhcp-hostsfile: "<mac>,<hostname>,<ip>" per address
    <state_dir>/<network id>/opts      dhcp-optsfile: router, DNS servers, option 121/249, MTU
    <state_dir>/<network id>/leases    its lease database
    <state_dir>/<network id>/pid       its pid
    <state_dir>/<network id>/dnsmasq.log   what it said on stderr (start-up errors)

The command line carries only what changes with the subnets (their ranges); hosts and options
are files, rewritten atomically and re-read on SIGHUP, so a port coming or going never restarts
the server. A command line that differs (a subnet added or removed) means a restart.

The process is ours when its pid file is in our state directory and /proc/<pid>/cmdline is
dnsmasq with that very `--pid-file`: that is how a restarted agent adopts it, and the only
processes it ever signals. It runs in the foreground as our child in a session of its own
(`nsenter --net=<namespace> dnsmasq … --keep-in-foreground`): not daemonising means no
intermediate process for an init to reap, and this process reaps what it started; it outlives
the agent, which adopts it again.

It drops root for `nobody` when that user can read its files (every directory above them is
world-searchable); otherwise it keeps root, since it re-reads its files after dropping
privileges. Every line written was validated (`desired.py`): MACs, IPv4 addresses and
`[a-z0-9-]` hostnames, nothing else.
"""

from __future__ import annotations

import dataclasses
import grp
import os
import pwd
import shutil
import signal
import stat
import subprocess
import threading
import time
from ipaddress import IPv4Address, IPv4Network
from pathlib import Path

from hostagent.network.base import NetworkingError
from hostagent.network.desired import METADATA_IP, DhcpSpec
from hostagent.network.kernel import NETNS_DIR

LEASE_SECONDS = 86400
STARTUP_TIMEOUT = 5.0
STOP_TIMEOUT = 3.0
_SEARCH_PATH = "/usr/sbin:/usr/bin:/sbin:/bin"
_ENV = {"PATH": _SEARCH_PATH, "LANG": "C"}

# The dnsmasq processes this process started: reaped here, whoever stops them.
_children: dict[int, subprocess.Popen[bytes]] = {}
_children_lock = threading.Lock()


@dataclasses.dataclass(frozen=True)
class Paths:
    directory: Path

    @property
    def host(self) -> Path:
        return self.directory / "host"

    @property
    def opts(self) -> Path:
        return self.directory / "opts"

    @property
    def leases(self) -> Path:
        return self.directory / "leases"

    @property
    def pid(self) -> Path:
        return self.directory / "pid"

    @property
    def log(self) -> Path:
        return self.directory / "dnsmasq.log"


@dataclasses.dataclass(frozen=True)
class Running:
    pid: int
    argv: tuple[str, ...]
    namespace_inode: int | None  # the network namespace it runs in


def executable() -> str:
    found = shutil.which("dnsmasq", path=_SEARCH_PATH)
    if found is None:
        raise NetworkingError("dnsmasq is not installed (Debian: dnsmasq-base)")
    return found


def privileges(directory: Path) -> tuple[str, str]:
    """The user and group dnsmasq drops to: nobody when nobody can reach files in `directory`,
    else root (it reads its hosts and options files after dropping privileges)."""
    try:
        nobody = pwd.getpwnam("nobody")
        group = grp.getgrgid(nobody.pw_gid).gr_name
    except KeyError:
        return "root", "root"
    for path in (directory, *directory.parents):
        try:
            if not os.stat(path).st_mode & stat.S_IXOTH:
                return "root", "root"
        except FileNotFoundError:
            continue  # made later by us, searchable
    return "nobody", group


def command(spec: DhcpSpec, paths: Paths, user: str, group: str) -> list[str]:
    """dnsmasq's command line (Neutron's flags, DHCP only)."""
    ranges = [
        f"--dhcp-range=set:{s.tag},{s.cidr.network_address},static,{s.cidr.netmask},{LEASE_SECONDS}s"
        for s in spec.subnets
    ]
    lease_max = sum(s.cidr.num_addresses for s in spec.subnets)
    return [
        executable(),
        "--no-hosts",
        "--no-resolv",
        "--port=0",
        "--bind-interfaces",
        f"--interface={spec.interface}",
        "--except-interface=lo",
        f"--pid-file={paths.pid}",
        f"--dhcp-hostsfile={paths.host}",
        f"--dhcp-optsfile={paths.opts}",
        f"--dhcp-leasefile={paths.leases}",
        *ranges,
        f"--dhcp-lease-max={lease_max}",
        "--dhcp-authoritative",
        "--conf-file=/dev/null",
        f"--user={user}",
        f"--group={group}",
        "--keep-in-foreground",
    ]


def hosts_file(spec: DhcpSpec) -> str:
    return "".join(f"{h.mac},{h.hostname},{h.ip}\n" for h in spec.hosts)


def opts_file(spec: DhcpSpec) -> str:
    """Per subnet: the router (or none: dnsmasq would offer itself), DNS servers (or none),
    the MTU, and classless static routes (121, and 249 for old Windows) holding the metadata
    route via the DHCP port, the host routes and the default route: a client that gets 121
    ignores option 3, so the default route must be in 121 too."""
    lines = []
    for s in spec.subnets:
        tag = f"tag:{s.tag}"
        lines.append(f"{tag},option:router,{s.gateway}" if s.gateway else f"{tag},option:router")
        dns = ",".join(map(str, s.dns))
        lines.append(f"{tag},option:dns-server,{dns}" if dns else f"{tag},option:dns-server")
        lines.append(f"{tag},option:mtu,{spec.mtu}")
        routes: dict[IPv4Network, IPv4Address] = {}
        routes[IPv4Network(f"{METADATA_IP}/32")] = s.server_ip
        for destination, nexthop in s.routes:
            routes[destination] = nexthop  # the subnet's own host routes win
        if s.gateway is not None:
            routes.setdefault(IPv4Network("0.0.0.0/0"), s.gateway)
        value = ",".join(f"{destination},{nexthop}" for destination, nexthop in routes.items())
        lines.append(f"{tag},option:classless-static-route,{value}")
        lines.append(f"{tag},249,{value}")
    return "".join(line + "\n" for line in lines)


def write_if_changed(path: Path, content: str) -> bool:
    """Atomically replace the file when its content differs; True if it was written."""
    try:
        if path.read_text() == content:
            return False
    except FileNotFoundError:
        pass
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(content)
    tmp.chmod(0o644)
    os.replace(tmp, path)
    return True


def _reap() -> None:
    with _children_lock:
        for pid, proc in list(_children.items()):
            if proc.poll() is not None:
                del _children[pid]


def _argv(pid: int) -> tuple[str, ...] | None:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    return tuple(part.decode(errors="replace") for part in raw.split(b"\0")[:-1]) or None  # a zombie has none


def _netns_inode(pid: int) -> int | None:
    try:
        return os.stat(f"/proc/{pid}/ns/net").st_ino
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None


def running(paths: Paths) -> Running | None:
    """Our dnsmasq for this directory, if it is alive."""
    _reap()
    try:
        pid = int(paths.pid.read_text().strip())
    except (FileNotFoundError, ValueError):
        return None
    argv = _argv(pid)
    if argv is None or os.path.basename(argv[0]) != "dnsmasq" or f"--pid-file={paths.pid}" not in argv:
        return None
    return Running(pid=pid, argv=argv, namespace_inode=_netns_inode(pid))


def start(paths: Paths, namespace: str, argv: list[str]) -> int:
    """Start dnsmasq in the namespace; its pid once it runs (its pid file written)."""
    paths.pid.unlink(missing_ok=True)
    with paths.log.open("ab") as log:
        proc = subprocess.Popen(
            ["nsenter", f"--net={NETNS_DIR / namespace}", *argv],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=log,
            start_new_session=True,
            close_fds=True,
            env=_ENV,
        )
    with _children_lock:
        _children[proc.pid] = proc
    deadline = time.monotonic() + STARTUP_TIMEOUT
    while time.monotonic() < deadline:
        code = proc.poll()
        if code is not None:
            raise NetworkingError(f"dnsmasq for {namespace} exited with status {code}: {_tail(paths.log)}")
        try:
            if int(paths.pid.read_text().strip() or 0) == proc.pid:
                return proc.pid
        except (FileNotFoundError, ValueError):
            pass
        time.sleep(0.02)
    stop(proc.pid)
    raise NetworkingError(
        f"dnsmasq for {namespace} did not start within {STARTUP_TIMEOUT}s: {_tail(paths.log)}"
    )


def _tail(path: Path, size: int = 400) -> str:
    try:
        return path.read_bytes()[-size:].decode(errors="replace").strip() or "(no output)"
    except FileNotFoundError:
        return "(no output)"


def reload(pid: int) -> None:
    """Re-read the hosts and options files."""
    os.kill(pid, signal.SIGHUP)


def stop(pid: int) -> None:
    """SIGTERM, then SIGKILL if it is still there after STOP_TIMEOUT; reaped if it is ours."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            break
        if _wait_gone(pid, STOP_TIMEOUT):
            break
    _reap()


def _wait_gone(pid: int, timeout: float) -> bool:
    with _children_lock:
        child = _children.get(pid)
    if child is not None:
        try:
            child.wait(timeout)
            return True
        except subprocess.TimeoutExpired:
            return False
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if _argv(pid) is None:  # gone, or a zombie for its parent to reap
            return True
        time.sleep(0.02)
    return False
