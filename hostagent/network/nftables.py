"""HostFirewall: the security groups of `firewall.py` in the kernel, through the `nft` command.

Everything here blocks (it runs `nft`): the agent calls it with `asyncio.to_thread`. With a
namespace, `nft` runs in it (`ip netns exec`), which is how the tests keep off the host's own
ruleset.

Ownership: our two tables (`bridge` and `inet`, named after the owner, with the owner as their
comment) and nothing else. A table of our name whose comment is another owner's is an error,
never touched. Both tables are replaced as a whole in one `nft -f` transaction, so a port that
had a filter is never without one; when the agent restarts, the tables stay in the kernel and
its first apply replaces them (adoption). After that, an apply changes only what differs from
the last one (`Ruleset.update`: elements, rule chains, remote groups' sets), in one transaction
too; should that fail (the kernel is not what was applied: someone changed our tables), the
tables are replaced. `apply(full=True)` replaces them whatever changed: the agent does so now and
then, which repairs whatever was changed behind its back.

br_netfilter is what hands bridged packets to conntrack: the bridge-nf-call sysctls of the
namespace must be 1 (Neutron's agent sets them too); a full apply checks them and sets them.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

from pyroute2.netlink.exceptions import NetlinkError

from hostagent.network import conntrack, kernel
from hostagent.network.base import NetworkingError
from hostagent.network.firewall import Firewall, check_owner, revocations, table_name
from hostagent.network.ruleset import Renderer, Ruleset, removal

NFT_TIMEOUT = 120.0  # seconds one nft transaction may take (a full replace of thousands of ports: ~1 s)
SYSCTLS = ("bridge-nf-call-iptables", "bridge-nf-call-ip6tables")
FAMILIES = ("bridge", "inet")
_COMMENT = re.compile(r'^\s*comment "(.*)"\s*$', re.MULTILINE)


class FirewallError(NetworkingError):
    """nft refused or failed, or the kernel cannot filter bridged traffic here."""


def nft_command() -> str:
    found = shutil.which("nft", path=os.environ.get("PATH", "") + ":/usr/sbin:/sbin")
    if found is None:
        raise FirewallError("no nft command (Debian: nftables)")
    return found


def run_nft(args: list[str], text: str | None = None, netns: str | None = None) -> str:
    """`nft ARGS` (in the namespace, if any) with `text` on its standard input; its output."""
    argv = [nft_command(), *args]
    if netns is not None:
        argv = ["ip", "netns", "exec", netns, *argv]
    try:
        done = subprocess.run(argv, input=text, capture_output=True, text=True, timeout=NFT_TIMEOUT)
    except subprocess.TimeoutExpired:
        raise FirewallError(f"nft {' '.join(args)} took longer than {NFT_TIMEOUT:.0f}s") from None
    if done.returncode != 0:
        raise FirewallError(f"nft {' '.join(args)} failed: {done.stderr.strip()[:2000]}")
    return done.stdout


def check(text: str, netns: str | None = None) -> None:
    """Whether nft (and the kernel) would accept a ruleset, without changing anything."""
    run_nft(["-c", "-f", "-"], text, netns)


def _bridge_netfilter() -> list[str]:
    """Runs in the namespace: the bridge-nf-call sysctls set to 1; which ones had to be."""
    changed = []
    for name in SYSCTLS:
        path = Path("/proc/sys/net/bridge") / name
        try:
            value = path.read_text().strip()
        except FileNotFoundError:
            raise FirewallError(
                "br_netfilter is not loaded (no /proc/sys/net/bridge): bridged traffic cannot be "
                "filtered statefully; load it (modprobe br_netfilter)"
            ) from None
        if value != "1":
            try:
                path.write_text("1")
            except OSError as exc:
                raise FirewallError(f"net.bridge.{name} is {value} and cannot be set to 1: {exc}") from None
            changed.append(name)
    return changed


def _strip_handles(value: Any) -> Any:
    """A `nft -j` listing without handles, set elements in order."""
    if isinstance(value, dict):
        out = {k: _strip_handles(v) for k, v in value.items() if k != "handle"}
        if isinstance(out.get("elem"), list):
            out["elem"] = sorted(out["elem"], key=lambda e: json.dumps(e, sort_keys=True))
        return out
    if isinstance(value, list):
        return [_strip_handles(v) for v in value]
    return value


def _canonical(listing: Any) -> Any:
    """A `nft -j list table` without what differs between two equal rulesets: handles, the order
    of set elements, and the order of the table's objects (which is the order they were added
    in), while the rules of each chain stay in their order."""

    def key(item: dict[str, Any]) -> tuple[str, str]:
        kind, body = next(iter(item.items()))
        return kind, str(body.get("chain") or body.get("name") or "") if isinstance(body, dict) else ""

    return sorted(_strip_handles(listing).get("nftables", []), key=key)


class HostFirewall:
    """Our nftables tables in one network namespace (None: the agent's own). One caller at a
    time: it remembers what it applied last."""

    def __init__(self, owner: str, netns: str | None = None) -> None:
        check_owner(owner)
        self.owner = owner
        self.netns = netns
        self.table = table_name(owner)
        self._applied: Ruleset | None = None  # what the kernel holds, as far as we know
        self._firewall: Firewall | None = None  # what it was made from
        self._renderer = Renderer()
        self._adopted = False  # whether tables of our name were checked to be ours

    def _nft(self, args: list[str], text: str | None = None) -> str:
        return run_nft(args, text, self.netns)

    def apply(self, firewall: Firewall, *, full: bool = False) -> dict[str, int]:
        """Make the kernel enforce `firewall`: nothing when it is what was applied last, else
        one transaction of what differs, or (first, with `full`, or when that fails) a full
        replace. Counts of what was done."""
        before = None if full else self._applied
        if before is not None and firewall == self._firewall:
            return {}
        previous = self._firewall
        wanted = self._renderer.ruleset(firewall, self.owner)
        counts: dict[str, int] = {}
        if before is not None and (update := wanted.update(before)) is not None:
            try:
                if update.text:
                    self._nft(["-f", "-"], update.text)
            except FirewallError:
                counts["firewall_update_failed"] = 1  # the kernel is not what we thought: replace it all
            else:
                self._applied, self._firewall = wanted, firewall
                return update.counts | self._revoke(previous, firewall)
        return counts | self._replace(wanted, firewall) | self._revoke(previous, firewall)

    def _revoke(self, before: Firewall | None, after: Firewall) -> dict[str, int]:
        """Once `after` is in force: the connections `before` admitted and `after` does not lose
        their conntrack entries. A failure here leaves them to time out (counted, never raised:
        the filter itself is in place)."""
        if before is None:
            return {}
        revoked = revocations(before, after)
        if not revoked:
            return {}
        try:
            deleted = conntrack.forget(revoked, self.netns)
        except (OSError, NetlinkError, NetworkingError):
            return {"conntrack_errors": 1}
        return {"conntrack_entries_deleted": deleted} if deleted else {}

    def _replace(self, wanted: Ruleset, firewall: Firewall) -> dict[str, int]:
        counts = {"firewall_replaced": 1}
        enabled = self._sysctls()
        if enabled:
            counts["bridge_netfilter_enabled"] = len(enabled)
        if not self._adopted:
            self._check_ours()
        self._applied = self._firewall = None  # unknown, should nft fail
        self._nft(["-f", "-"], wanted.replace())
        self._applied, self._firewall = wanted, firewall
        return counts

    def _sysctls(self) -> list[str]:
        if self.netns is None:
            return _bridge_netfilter()
        return kernel.run_in_namespace(self.netns, _bridge_netfilter)

    def _check_ours(self) -> None:
        """Tables of our name that are there must carry our comment (adopted), else: error."""
        for family in self.tables():
            listing = self._nft(["-t", "list", "table", family, self.table])
            found = _COMMENT.search(listing)
            if found is None or found.group(1) != self.owner:
                raise FirewallError(
                    f"nftables table {family} {self.table} exists and is not ours ({self.owner}); not touched"
                )
        self._adopted = True

    def tables(self) -> list[str]:
        """The families in which our table exists."""
        listing = json.loads(self._nft(["-j", "list", "tables"]))
        found = {
            item["table"]["family"]
            for item in listing.get("nftables", [])
            if "table" in item and item["table"].get("name") == self.table
        }
        return [family for family in FAMILIES if family in found]

    def remove(self) -> bool:
        """Delete both tables (whatever they hold); whether there was anything to delete."""
        present = self.tables()
        if present:
            if not self._adopted:
                self._check_ours()
            self._nft(["-f", "-"], removal(self.owner))
        self._applied = self._firewall = None
        return bool(present)

    def state(self) -> dict[str, Any]:
        """Both tables as `nft -j list table` gives them (`_canonical`): equal for equal rulesets,
        however they were made."""
        return {
            family: _canonical(json.loads(self._nft(["-j", "list", "table", family, self.table])))
            for family in self.tables()
        }

    def listing(self) -> str:
        """Both tables as nft prints them (for logs and failing tests)."""
        return "".join(self._nft(["list", "table", family, self.table]) for family in self.tables())
