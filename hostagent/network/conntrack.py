"""Conntrack entries that a firewall change revokes (`firewall.revocations`), deleted through
ctnetlink (pyroute2): a stateful port passes what its entry says is established, so a rule
removed would otherwise keep admitting the connections it admitted. Our bridges' connections
are tracked in their network's zone (`ruleset.py`), so only entries of our zones are looked at.
"""

from __future__ import annotations

import errno
import ipaddress
import socket
from collections.abc import Collection

from pyroute2 import Conntrack
from pyroute2.netlink.exceptions import NetlinkError

from hostagent.network import kernel
from hostagent.network.firewall import Revocation

FAMILIES = {4: socket.AF_INET, 6: socket.AF_INET6}


def forget(revocations: Collection[Revocation], netns: str | None = None) -> int:
    """Delete the entries of these connections (in the namespace, if any); how many went."""
    if not revocations:
        return 0
    if netns is None:
        return _forget(revocations)
    return kernel.run_in_namespace(netns, _forget, revocations)


def _forget(revocations: Collection[Revocation]) -> int:
    deleted = 0
    for version, family in FAMILIES.items():
        wanted = [revocation for revocation in revocations if revocation.version == version]
        if not wanted:
            continue
        zones = {revocation.zone for revocation in wanted}
        ct = Conntrack(nfgen_family=family)
        try:
            doomed = []
            for entry in ct.dump_entries():
                if entry.zone not in zones:
                    continue
                orig = entry.tuple_orig
                source, destination = ipaddress.ip_address(orig.saddr), ipaddress.ip_address(orig.daddr)
                if any(r.matches(entry.zone, orig.proto, source, destination, orig.dport) for r in wanted):
                    doomed.append(entry)
            for entry in doomed:
                try:
                    ct.entry("del", tuple_orig=entry.tuple_orig, zone=entry.zone)
                except NetlinkError as exc:
                    if exc.code != errno.ENOENT:  # gone by itself meanwhile
                        raise
                    continue
                deleted += 1
        finally:
            ct.close()
    return deleted
