"""The host side of networking: per network a Linux bridge, per port a tap, and a qdhcp
namespace with dnsmasq and the metadata service, converged from the database.

- `base.py`: the interface the host agent speaks (`Networking`, `Vif`, `NetworkSettings`,
  `NetworkingError`) and `NullNetworking`, for a process without networking;
- `linuxbridge.py`: `HostNetworking`, the converge passes;
- `desired.py`: what the database asks for, validated; Neutron's names;
- `kernel.py`: bridges, taps, veths and namespaces through pyroute2;
- `firewall.py`: security groups, validated, as an nftables ruleset (pure);
- `nftables.py`: `HostFirewall`, that ruleset in the kernel through `nft`;
- `dnsmasq.py`: dnsmasq's files, command line and process;
- `metadata.py`: the metadata service at 169.254.169.254 (EC2 and OpenStack).
"""

from hostagent.network.base import Networking, NetworkingError, NetworkSettings, NullNetworking, Vif
from hostagent.network.linuxbridge import HostNetworking

__all__ = ["HostNetworking", "NetworkSettings", "Networking", "NetworkingError", "NullNetworking", "Vif"]
