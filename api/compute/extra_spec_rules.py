"""The values Nova accepts for well-known flavor extra specs (checked from microversion 2.86).

Nova registers a validator for every extra spec its drivers read; this is the `hw:` and `hw_rng:`
part of that registry that a libvirt cloud uses. A key with no rule here is accepted as given:
Nova would also refuse unknown keys in a namespace it knows, which this table is too small to
judge (it would refuse keys newer Nova releases accept).
"""

from __future__ import annotations

import dataclasses
import re

from api.errors import BadRequest

_CPU_MAP = r"\^?\d+((-\d+)?(,\^?\d+(-\d+)?)?)*"
_TRUE = {"1", "t", "true", "on", "y", "yes"}
_FALSE = {"0", "f", "false", "off", "n", "no"}


@dataclasses.dataclass(frozen=True)
class Rule:
    name: str  # a key, or a regex over keys (for keys with an index, e.g. hw:numa_cpus.0)
    kind: type  # int, bool or str
    enum: tuple[str, ...] = ()
    pattern: str | None = None
    minimum: int | None = None

    def check(self, value: str) -> None:
        if self.kind is int:
            try:
                number = int(value)
            except ValueError:
                raise BadRequest(f"Validation failed; '{value}' is not a valid integer value.") from None
            if self.minimum is not None and number < self.minimum:
                raise BadRequest(
                    f"Validation failed; '{value}' is less than the min value of '{self.minimum}'."
                )
        elif self.kind is bool:
            if value.lower() not in _TRUE | _FALSE:
                raise BadRequest(f"Validation failed; '{value}' is not a valid boolean-like value.")
        elif self.pattern is not None:
            if not re.fullmatch(self.pattern, value):
                raise BadRequest(f"Validation failed; '{value}' is not of the format '{self.pattern}'.")
        elif self.enum and value not in self.enum:
            raise BadRequest(f"Validation failed; '{value}' is not one of: {', '.join(self.enum)}.")


RULES = (
    Rule("hw:cpu_realtime", bool),
    Rule("hw:cpu_realtime_mask", str, pattern=r"(\^)?\d+((-\d+)?(,\^?\d+(-\d+)?)?)*"),
    Rule("hw:hide_hypervisor_id", bool),
    Rule("hw:cpu_policy", str, enum=("dedicated", "shared", "mixed")),
    Rule("hw:cpu_thread_policy", str, enum=("prefer", "isolate", "require")),
    Rule("hw:emulator_threads_policy", str, enum=("isolate", "share")),
    Rule("hw:cpu_dedicated_mask", str, pattern=_CPU_MAP),
    Rule("hw:mem_page_size", str, pattern=r"(large|small|any|\d+([kKMGT]i?)?(b|bit|B)?)"),
    Rule("hw:numa_nodes", int, minimum=1),
    Rule(r"hw:numa_cpus\.\d+", str, pattern=_CPU_MAP),
    Rule(r"hw:numa_mem\.\d+", int, minimum=1),
    Rule("hw:pci_numa_affinity_policy", str, enum=("required", "preferred", "legacy")),
    Rule("hw:cpu_sockets", int, minimum=1),
    Rule("hw:cpu_cores", int, minimum=1),
    Rule("hw:cpu_threads", int, minimum=1),
    Rule("hw:max_cpu_sockets", int, minimum=1),
    Rule("hw:max_cpu_cores", int, minimum=1),
    Rule("hw:max_cpu_threads", int, minimum=1),
    Rule("hw:boot_menu", bool),
    Rule("hw:mem_encryption", bool),
    Rule("hw:pmem", str, pattern="([a-zA-Z0-9_]+(,)?)+"),
    Rule("hw:pmu", bool),
    Rule("hw:serial_port_count", int, minimum=0),
    Rule("hw:tpm_model", str, enum=("tpm-tis", "tpm-crb")),
    Rule("hw:tpm_version", str, enum=("1.2", "2.0")),
    Rule("hw:watchdog_action", str, enum=("none", "pause", "poweroff", "reset", "disabled")),
    Rule("hw_rng:allowed", bool),
    Rule("hw_rng:rate_bytes", int, minimum=0),
    Rule("hw_rng:rate_period", int, minimum=0),
)
_BY_NAME = {rule.name: rule for rule in RULES}


def check(key: str, value: str) -> None:
    """Refuse (400) a value its rule does not allow; keys without a rule pass."""
    rule = _BY_NAME.get(key) or next((r for r in RULES if re.fullmatch(r.name, key)), None)
    if rule is not None:
        rule.check(value)
