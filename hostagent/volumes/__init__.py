"""Block storage on the host: the storage agent and the backends that hold volumes.

- `backend.py`: the VolumeBackend interface (create, delete, extend, connection, capacity), so
  that LVM or Ceph RBD can follow as modules of their own;
- `file.py`: the FileBackend, qcow2 files `volume-<id>` made with qemu-img;
- `agent.py`: the StorageAgent, which serves one backend's `agent.<host>@<backend>` queue and
  reports to the volume actors, and keeps its `volume_backends` row.

Attaching a volume to a guest is the compute host's part (`hostagent.agent`, `hostagent.virt`).
"""
