"""The libvirt driver: libvirt's test driver in-process (define, power actions, events, XML,
isolation between drivers), and one real guest on qemu:///system when it is reachable."""

from __future__ import annotations

import asyncio
import subprocess
import threading
import uuid
import xml.etree.ElementTree as ET
from collections.abc import Awaitable, Callable
from pathlib import Path

import libvirt
import pytest

from hostagent.storage import InstanceStorage
from hostagent.virt import domain
from hostagent.virt.base import (
    Disk,
    IllegalPowerAction,
    InstanceNotFound,
    InstanceSpec,
    LifecycleEvent,
    VirtError,
)
from hostagent.virt.libvirt import LibvirtDriver, choose_domain_type
from protocol.power import PowerAction
from protocol.states import PowerState
from tests.hostagent.conftest import PREFIX, make_image
from tests.hostagent.local_control import DirectoryImages

OpenDriver = Callable[..., Awaitable[LibvirtDriver]]
NASTY = "a<b>&\"c'"


def spec(workdir: Path, name: str = f"{PREFIX}-server", **changes: object) -> InstanceSpec:
    server_id = str(uuid.uuid4())
    directory = workdir / "instances" / server_id
    values: dict[str, object] = {
        "uuid": server_id,
        "name": name,
        "vcpus": 2,
        "memory_mb": 256,
        "disks": (Disk(directory / "disk", "qcow2"), Disk(directory / "disk.local", "qcow2")),
        "console_log": directory / "console.log",
        "flavor_name": "m1.test",
    }
    values.update(changes)
    return InstanceSpec(**values)  # type: ignore[arg-type]


async def next_event(events: object, server_id: str, timeout: float = 5.0) -> LifecycleEvent:
    async def wait() -> LifecycleEvent:
        async for event in events:  # type: ignore[attr-defined]
            if event.uuid == server_id:
                return event
        raise AssertionError("event stream ended")

    return await asyncio.wait_for(wait(), timeout)


async def test_instance_is_defined_started_power_cycled_and_destroyed(
    open_test_driver: OpenDriver, workdir: Path
) -> None:
    driver = await open_test_driver()
    s = spec(workdir)
    assert await driver.spawn(s) is PowerState.RUNNING
    assert await driver.instances() == {s.uuid: PowerState.RUNNING}
    expected = [
        (PowerAction.STOP, PowerState.SHUTDOWN),
        (PowerAction.START, PowerState.RUNNING),
        (PowerAction.PAUSE, PowerState.PAUSED),
        (PowerAction.UNPAUSE, PowerState.RUNNING),
        (PowerAction.SUSPEND, PowerState.SUSPENDED),
        (PowerAction.RESUME, PowerState.RUNNING),
        (PowerAction.REBOOT, PowerState.RUNNING),
        (PowerAction.REBOOT_HARD, PowerState.RUNNING),
        (PowerAction.PAUSE, PowerState.PAUSED),
        (PowerAction.REBOOT_HARD, PowerState.RUNNING),
        (PowerAction.SUSPEND, PowerState.SUSPENDED),
        (PowerAction.STOP, PowerState.SHUTDOWN),
    ]
    for action, state in expected:
        assert await driver.power(s.uuid, action) is state, action
        assert await driver.power_state(s.uuid) is state, action
    assert await driver.destroy(s.uuid) is True
    assert await driver.power_state(s.uuid) is None
    assert await driver.instances() == {}
    assert await driver.destroy(s.uuid) is False


async def test_an_action_in_effect_succeeds_and_an_impossible_one_is_refused(
    open_test_driver: OpenDriver, workdir: Path
) -> None:
    driver = await open_test_driver()
    s = spec(workdir)
    await driver.spawn(s)
    assert await driver.power(s.uuid, PowerAction.START) is PowerState.RUNNING
    assert await driver.power(s.uuid, PowerAction.UNPAUSE) is PowerState.RUNNING  # in effect already
    assert await driver.power(s.uuid, PowerAction.SUSPEND) is PowerState.SUSPENDED
    assert await driver.power(s.uuid, PowerAction.SUSPEND) is PowerState.SUSPENDED
    with pytest.raises(IllegalPowerAction) as refused:
        await driver.power(s.uuid, PowerAction.PAUSE)  # a saved guest is not running
    assert refused.value.state is PowerState.SUSPENDED
    await driver.power(s.uuid, PowerAction.STOP)  # discards the saved state
    assert await driver.power_state(s.uuid) is PowerState.SHUTDOWN
    assert await driver.power(s.uuid, PowerAction.STOP) is PowerState.SHUTDOWN
    with pytest.raises(IllegalPowerAction):
        await driver.power(s.uuid, PowerAction.UNPAUSE)
    with pytest.raises(InstanceNotFound):
        await driver.power(str(uuid.uuid4()), PowerAction.STOP)


async def test_lifecycle_events_report_what_happened(open_test_driver: OpenDriver, workdir: Path) -> None:
    driver = await open_test_driver()
    events = driver.events()
    s = spec(workdir)
    await driver.spawn(s)
    assert (await next_event(events, s.uuid)).power_state is PowerState.RUNNING
    await driver.power(s.uuid, PowerAction.PAUSE)
    assert (await next_event(events, s.uuid)).power_state is PowerState.PAUSED
    await driver.power(s.uuid, PowerAction.STOP)
    assert (await next_event(events, s.uuid)).power_state is PowerState.SHUTDOWN
    await driver.destroy(s.uuid)
    assert (await next_event(events, s.uuid)).power_state is PowerState.NOSTATE


async def test_events_of_calls_made_in_other_threads_arrive(
    open_test_driver: OpenDriver, workdir: Path
) -> None:
    """libvirt calls the event implementation from the calling thread; plain libvirtaio then
    never wakes the loop (measured), ours must."""
    driver = await open_test_driver()
    events = driver.events()
    s = spec(workdir)
    definition = driver.describe(s)

    def define_and_start() -> None:  # a bare thread: nothing else wakes the event loop
        driver.connection.defineXML(definition).create()

    thread = threading.Thread(target=define_and_start)
    thread.start()
    try:
        assert (await next_event(events, s.uuid, timeout=3)).power_state is PowerState.RUNNING
    finally:
        await asyncio.to_thread(thread.join)


async def test_domain_xml_is_well_formed_and_carries_the_name_as_text(
    open_test_driver: OpenDriver, workdir: Path
) -> None:
    driver = await open_test_driver()
    s = spec(workdir, name=f"{PREFIX} {NASTY}\x01</title><evil/>")
    definition = driver.describe(s)
    root = ET.fromstring(definition)  # well-formed
    assert root.get("type") == "test"
    assert root.findtext("name") == f"instance-{s.uuid}"
    assert root.findtext("uuid") == s.uuid
    assert root.findtext("title") == f"{PREFIX} {NASTY}\ufffd</title><evil/>"
    assert root.find("evil") is None and root.find(".//evil") is None
    assert root.findtext("memory") == "256" and root.find("memory").get("unit") == "MiB"  # type: ignore[union-attr]
    assert root.findtext("vcpu") == "2"
    disks = root.findall("devices/disk")
    assert [
        (
            d.find("source").get("file"),
            d.find("target").get("dev"),
            d.find("target").get("bus"),  # type: ignore[union-attr]
            d.find("driver").get("type"),
        )
        for d in disks
    ] == [  # type: ignore[union-attr]
        (str(s.disks[0].path), "vda", "virtio", "qcow2"),
        (str(s.disks[1].path), "vdb", "virtio", "qcow2"),
    ]
    serial = root.find("devices/serial")
    assert serial is not None and serial.get("type") == "file"
    assert serial.find("source").get("path") == str(s.console_log)  # type: ignore[union-attr]
    assert root.find("devices/interface") is None  # no NIC in this issue
    meta = root.find(f"metadata/{{{domain.METADATA_NS}}}instance/{{{domain.METADATA_NS}}}name")
    assert meta is not None and meta.text == f"{PREFIX} {NASTY}\ufffd</title><evil/>"

    # libvirt takes it, and gives the name back intact.
    await driver.spawn(s)
    dumped = ET.fromstring(await asyncio.to_thread(driver.connection.lookupByUUIDString(s.uuid).XMLDesc))
    assert dumped.findtext("title") == f"{PREFIX} {NASTY}\ufffd</title><evil/>"


async def test_two_drivers_in_one_process_do_not_see_each_others_domains(
    open_test_driver: OpenDriver, workdir: Path
) -> None:
    one, two = await open_test_driver("one"), await open_test_driver("two")
    s = spec(workdir)
    await one.spawn(s)
    assert await one.instances() == {s.uuid: PowerState.RUNNING}
    assert await two.instances() == {}
    assert await two.power_state(s.uuid) is None
    assert await two.destroy(s.uuid) is False
    assert await one.power_state(s.uuid) is PowerState.RUNNING
    assert (await one.host_info()).hypervisor_hostname == f"{PREFIX}-one"
    assert (await two.host_info()).hypervisor_hostname == f"{PREFIX}-two"


async def test_the_test_host_has_the_inventory_of_its_node_file(open_test_driver: OpenDriver) -> None:
    driver = await open_test_driver(vcpus=12, memory_mb=4096)
    info = await driver.host_info()
    assert (info.virt_type, info.vcpus, info.memory_mb, info.hypervisor_type) == ("test", 12, 4096, "TEST")


async def test_domains_that_are_not_instances_are_left_alone(
    open_test_driver: OpenDriver, workdir: Path
) -> None:
    driver = await open_test_driver()
    other = (
        f"<domain type='test'><name>{PREFIX}-not-ours</name><memory unit='MiB'>64</memory>"
        "<vcpu>1</vcpu><os><type>hvm</type></os></domain>"
    )
    dom = await asyncio.to_thread(driver.connection.defineXML, other)
    await asyncio.to_thread(dom.create)
    s = spec(workdir)
    await driver.spawn(s)
    assert await driver.instances() == {s.uuid: PowerState.RUNNING}
    assert await asyncio.to_thread(dom.isActive) == 1


def test_domain_type_is_kvm_only_when_asked_for_or_known_to_work() -> None:
    yes, no = (lambda: True), (lambda: False)
    assert choose_domain_type("auto", {"vmx"}, True, yes) == "kvm"  # bare metal, KVM offered
    assert choose_domain_type("auto", {"vmx", "hypervisor"}, True, yes) == "qemu"  # nested: TCG
    assert choose_domain_type("auto", {"vmx"}, False, yes) == "qemu"  # /dev/kvm unusable
    assert choose_domain_type("auto", {"vmx"}, True, no) == "qemu"
    assert choose_domain_type("kvm", {"hypervisor"}, True, yes) == "kvm"  # the operator's call
    assert choose_domain_type("qemu", {"vmx"}, True, yes) == "qemu"
    with pytest.raises(VirtError):
        choose_domain_type("kvm", set(), True, no)
    with pytest.raises(VirtError):
        choose_domain_type("xen", set(), True, yes)


# --- a real guest -----------------------------------------------------------------------------


def qemu_system_unavailable() -> str | None:
    """Why qemu:///system cannot be used here, or None."""
    try:
        result = subprocess.run(
            ["virsh", "-c", "qemu:///system", "list"], check=False, capture_output=True, text=True, timeout=30
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"virsh -c qemu:///system list failed: {exc}"
    if result.returncode != 0:
        return f"qemu:///system is not reachable: {result.stderr.strip()}"
    return None


async def test_a_real_guest_runs_on_qemu_and_is_destroyed(workdir: Path, image_dir: Path) -> None:
    reason = qemu_system_unavailable()
    if reason:
        pytest.skip(reason)
    storage = InstanceStorage(workdir / f"{PREFIX}-qemu", DirectoryImages(image_dir))
    image_id = make_image(image_dir, "16M")
    server_id = str(uuid.uuid4())
    driver = LibvirtDriver.for_qemu(domain_type="auto", shutdown_timeout=0)
    async with driver:
        assert driver.domain_type in ("qemu", "kvm")
        try:
            disks = await storage.create(server_id, image_id, root_gb=1)
            paths = storage.paths(server_id)
            s = InstanceSpec(
                uuid=server_id,
                name=f"{PREFIX} qemu {NASTY}",
                vcpus=1,
                memory_mb=64,
                disks=disks,
                console_log=paths.console_log,
                flavor_name="tiny",
            )
            assert await driver.spawn(s) is PowerState.RUNNING
            dom = await asyncio.to_thread(driver.connection.lookupByUUIDString, server_id)
            state, _ = await asyncio.to_thread(dom.state)
            assert state == libvirt.VIR_DOMAIN_RUNNING
            live = ET.fromstring(await asyncio.to_thread(dom.XMLDesc))
            assert live.get("type") == driver.domain_type
            assert live.find("devices/disk/source").get("file") == str(paths.disk)  # type: ignore[union-attr]
            assert live.find("devices/interface") is None
            assert paths.console_log.exists()
            assert await driver.power(server_id, PowerAction.STOP) is PowerState.SHUTDOWN  # destroyed at once
        finally:
            await driver.destroy(server_id)
            await storage.remove(server_id)
        assert await driver.power_state(server_id) is None
        assert not storage.paths(server_id).directory.exists()
