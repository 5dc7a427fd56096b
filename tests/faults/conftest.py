"""The fault tests' fixtures: a private cloud on a private RabbitMQ and PostgreSQL
(`private.py`), and a cloud of separate processes (`cluster.py`)."""

from tests.faults.cluster import fault_cluster
from tests.faults.private import fault_cloud, postgres, rabbit

__all__ = ["fault_cloud", "fault_cluster", "postgres", "rabbit"]
