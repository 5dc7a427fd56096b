"""Host agents: claim resources on a compute host and drive libvirt, bridges and dnsmasq.
Built by the compute issue; agents talk to actors only through `protocol` messages."""
