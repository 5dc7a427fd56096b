"""Host agents: claim resources on a compute host and drive libvirt, bridges and dnsmasq.
Agents talk to actors only through `protocol` messages (they consume `agent.<host>` and reply
to the server actors); the only rows they write are their own host's in `compute_hosts`.

- `agent.py`: the HostAgent (requests, replies, power-state sync, lifecycle);
- `host.py`: the host's `compute_hosts` row (inventory and heartbeat);
- `storage.py`, `qemu_img.py`: instance directories, the image cache, qcow2 overlays;
- `virt/`: the hypervisor interface (`base.py`) and the libvirt driver (`libvirt.py`);
- `network/`: bridges, taps, the qdhcp namespaces with dnsmasq and the metadata service, one
  `HostNetworking` per kernel shared by the agents of a process, converged from the ports the
  port actors bound to its hosts (it reads those rows; it writes none).
"""
