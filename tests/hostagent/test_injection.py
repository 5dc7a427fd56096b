"""Hostile strings against the host agent's generators (issue 10): a server's name, flavor name,
disk and console paths, hostnames, MACs, DNS servers, routes, user data, metadata and key
material holding XML metacharacters, `]]>`, line breaks, NUL and other control characters,
`--option` look-alikes, shell metacharacters or a megabyte never reach libvirt XML, a dnsmasq
file or command line, the metadata service's answers or a shell unescaped: the XML parses with
the value as text, a dnsmasq file holds exactly the expected lines, and a process gets argv lists.

Pure functions, plus libvirt's embedded test driver (no daemon, nothing left behind).
"""

from __future__ import annotations

import ast
import asyncio
import base64
import json
import re
import uuid
import xml.etree.ElementTree as ET
from ipaddress import IPv4Address
from pathlib import Path
from typing import Any

import pytest

from hostagent import qemu_img
from hostagent.network import desired, dnsmasq
from hostagent.network.metadata import Instance, ec2_listing, ec2_meta_data, openstack_meta_data
from hostagent.virt import domain
from hostagent.virt.base import Disk, InstanceSpec, Interface, VirtError

ROOT = Path(__file__).resolve().parents[2]
NS = "{urn:actorstack:instance:1}"
PRINTABLE_HOSTILE = [
    "<domain type='kvm'><name>evil</name></domain>",
    "a & b &amp; &#x41; &lt;",
    "]]><![CDATA[x]]>",
    "'\"' \"'\"",
    "$(reboot)",
    "`halt`",
    "; rm -rf / | cat /etc/shadow",
    "--dhcp-option=3,1.2.3.4",
    "<!DOCTYPE x [<!ENTITY e SYSTEM 'file:///etc/passwd'>]>&e;",
    "\u202eevil\u200b",
    "tab\there",
    "line\nbreak",
]
CONTROL_HOSTILE = ["nul\x00byte", "esc\x1b[31m", "bell\x07", "cr\rlf", "\x0b\x0c\x7f\x80\x9f", "\ufffe\uffff"]
MEGABYTE = "<&>]]>\"'" * (1024 * 1024 // 8)


def _spec(name: str, **changes: Any) -> InstanceSpec:
    base = Path("/var/lib/actorstack/instances") / "0f1e2d3c-4b5a-4968-8776-655443322110"
    fields: dict[str, Any] = {
        "uuid": "0f1e2d3c-4b5a-4968-8776-655443322110",
        "name": name,
        "vcpus": 1,
        "memory_mb": 64,
        "disks": (Disk(path=base / "disk", format="qcow2"),),
        "console_log": base / "console.log",
        "flavor_name": name,
        "interfaces": (Interface(mac_address="fa:16:3e:00:00:01", tap="tap0f1e2d3c-4b"),),
    } | changes
    return InstanceSpec(**fields)


def _xml_safe(value: str) -> str:
    """What an XML 1.0 parser can give back for `value`: characters XML cannot carry are
    replaced (domain._text), and a parser turns CR and CRLF into LF."""
    return domain._NOT_XML.sub("\ufffd", value).replace("\r\n", "\n").replace("\r", "\n")


# --- libvirt domain XML --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "value",
    [*PRINTABLE_HOSTILE, *CONTROL_HOSTILE, MEGABYTE],
    ids=[*map(repr, PRINTABLE_HOSTILE), *map(repr, CONTROL_HOSTILE), "1MB"],
)
def test_a_hostile_name_is_text_in_the_domain_xml(value: str) -> None:
    xml = domain.build(_spec(value), "test")
    root = ET.fromstring(xml)  # parses: nothing broke out of its element
    expected = _xml_safe(value)
    assert root.findtext("title") == expected
    assert root.findtext(f"metadata/{NS}instance/{NS}name") == expected
    assert root.findtext(f"metadata/{NS}instance/{NS}flavor") == expected
    assert root.findtext("name") == "instance-0f1e2d3c-4b5a-4968-8776-655443322110"  # not the user's
    assert [child.tag for child in root] == [
        "name",
        "uuid",
        "title",
        "metadata",
        "memory",
        "vcpu",
        "os",
        "features",
        "clock",
        "on_poweroff",
        "on_reboot",
        "on_crash",
        "devices",
    ]
    assert "<!DOCTYPE" not in xml and "<![CDATA[" not in xml
    assert not re.search("[\x00-\x08\x0b\x0c\x0e-\x1f]", xml)


@pytest.mark.parametrize("value", PRINTABLE_HOSTILE[:9], ids=repr)
def test_hostile_paths_are_attribute_values_in_the_domain_xml(value: str) -> None:
    base = Path("/srv") / value
    spec = _spec(
        "vm",
        disks=(
            Disk(path=base / "disk", format="qcow2"),
            Disk(path=base / "vol", format="raw", device="vdb", serial=value),
        ),
        console_log=base / "console.log",
    )
    root = ET.fromstring(domain.build(spec, "test"))
    sources = [d.find("source").get("file") for d in root.findall("devices/disk")]  # type: ignore[union-attr]
    assert sources == [str(base / "disk"), str(base / "vol")]
    assert [d.findtext("serial") for d in root.findall("devices/disk")] == [None, value]
    assert root.find("devices/serial/source").get("path") == str(base / "console.log")  # type: ignore[union-attr]
    found = domain.find_disk(domain.build(spec, "test"), serial=value)
    assert found is not None and found.device == "vdb" and found.source == str(base / "vol")


@pytest.mark.parametrize("device", ["vdb'/><disk", "../vda", "vda\n", "sda", "vd", "vdB", "--vdb"])
def test_a_device_name_that_is_not_a_virtio_disk_is_refused(device: str) -> None:
    with pytest.raises(VirtError, match="invalid disk device"):
        domain.build(_spec("vm", disks=(Disk(path=Path("/d"), format="raw", device=device),)), "test")


def test_libvirt_itself_reads_a_hostile_name_back_intact() -> None:
    libvirt = pytest.importorskip("libvirt")
    name = "".join(PRINTABLE_HOSTILE[:9]) + " " + "é" * 1000
    spec = _spec(name, uuid=str(uuid.uuid4()))
    conn = libvirt.open("test:///default")  # in-process: gone with the connection
    try:
        dom = conn.defineXML(domain.build(spec, "test"))
        try:
            root = ET.fromstring(dom.XMLDesc(0))
            assert root.findtext("title") == name
            assert dom.name() == domain.domain_name(spec.uuid)
        finally:
            dom.undefine()
    finally:
        conn.close()


# --- dnsmasq -------------------------------------------------------------------------------------------

NET, DHCP_PORT, SUBNET = "net-1", "dhcp-port-1", "subnet-1"
HOSTILE_HOSTNAMES = [
    "web\n--dhcp-option=3,6.6.6.6",
    "a,b,10.0.0.9",
    "UPPER",
    "x" * 64,
    "$(id)",
    "a b",
    "",
    "dot.ted",
    "nul\x00",
    "é",
]
HOSTILE_MACS = [
    "fa:16:3e:00:00:99\n--conf-file=/etc/passwd",
    "FA:16:3E:00:00:99",
    "01:00:5e:00:00:01",
    "fa:16:3e:00:00",
    "fa-16-3e-00-00-99",
    "fa:16:3e:00:00:99,evil",
]


def _rows(hostnames: list[str | None], macs: list[str], *, dns: list[str] = (), routes: Any = ()) -> Any:
    taps = [
        {
            "port_id": "port-vm",
            "network_id": NET,
            "server_id": "server-1",
            "mac": "fa:16:3e:00:00:10",
            "up": True,
            "mtu": 1450,
        }
    ]
    subnets = [
        {
            "id": SUBNET,
            "network_id": NET,
            "cidr": "10.0.0.0/24",
            "gateway_ip": "10.0.0.1",
            "dns_nameservers": list(dns),
            "host_routes": json.dumps(list(routes)),
        }
    ]
    addresses = [
        {
            "network_id": NET,
            "subnet_id": SUBNET,
            "ip": "10.0.0.2",
            "port_id": DHCP_PORT,
            "mac": "fa:16:3e:00:00:02",
            "device_owner": desired.DHCP_OWNER,
            "device_id": f"dhcp-{NET}",
            "hostname": None,
        }
    ]
    for index, (hostname, mac) in enumerate(zip(hostnames, macs, strict=True)):
        addresses.append(
            {
                "network_id": NET,
                "subnet_id": SUBNET,
                "ip": f"10.0.0.{20 + index}",
                "port_id": f"port-{index}",
                "mac": mac,
                "device_owner": "compute:nova",
                "device_id": f"server-{index}",
                "hostname": hostname,
            }
        )
    return taps, subnets, addresses


def test_hostile_hostnames_never_reach_the_hosts_file() -> None:
    macs = [f"fa:16:3e:00:01:{i:02x}" for i in range(len(HOSTILE_HOSTNAMES))]
    built = desired.build(*_rows([*HOSTILE_HOSTNAMES], macs))
    spec = built.networks[NET].dhcp
    assert spec is not None
    lines = dnsmasq.hosts_file(spec).splitlines()
    # every address is served, under its own name when it is a valid one, else by its address
    assert lines == [f"{mac},host-10-0-0-{20 + i},10.0.0.{20 + i}" for i, mac in enumerate(macs)]
    assert len(built.problems) == len(HOSTILE_HOSTNAMES)


def test_hostile_macs_are_left_out_of_dhcp_and_taps() -> None:
    built = desired.build(*_rows(["ok"] * len(HOSTILE_MACS), HOSTILE_MACS))
    spec = built.networks[NET].dhcp
    assert spec is not None and dnsmasq.hosts_file(spec) == ""
    assert len(built.problems) == len(HOSTILE_MACS)
    taps, subnets, addresses = _rows([], [])
    bad_tap = {**taps[0], "port_id": "../../etc", "mac": HOSTILE_MACS[0]}
    assert desired.build([bad_tap], subnets, addresses).networks == {}


def test_hostile_dns_servers_and_routes_never_reach_the_options_file() -> None:
    dns = ["10.0.0.53", "8.8.8.8\n--dhcp-option=6,6.6.6.6", "6.6.6.6,7.7.7.7", "nonsense"]
    routes = [
        {"destination": "192.168.0.0/16", "nexthop": "10.0.0.1"},
        {"destination": "0.0.0.0/0\ntag:x", "nexthop": "10.0.0.1"},
        {"destination": "10.9.0.0/16", "nexthop": "10.0.0.1,6.6.6.6"},
        {"nexthop": "x"},
        "junk",
    ]
    built = desired.build(*_rows(["web"], ["fa:16:3e:00:01:01"], dns=dns, routes=routes))
    spec = built.networks[NET].dhcp
    assert spec is not None
    tag = f"tag:subnet-{SUBNET}"
    route_value = "169.254.169.254/32,10.0.0.2,192.168.0.0/16,10.0.0.1,0.0.0.0/0,10.0.0.1"
    assert dnsmasq.opts_file(spec).splitlines() == [
        f"{tag},option:router,10.0.0.1",
        f"{tag},option:dns-server,10.0.0.53",
        f"{tag},option:mtu,1450",
        f"{tag},option:classless-static-route,{route_value}",
        f"{tag},249,{route_value}",
    ]
    assert len(built.problems) == 3 + 4  # each bad DNS server and route, left out and reported
    assert dnsmasq.hosts_file(spec) == "fa:16:3e:00:01:01,web,10.0.0.20\n"


@pytest.mark.parametrize("bad", ["net/../x", "-x", "a" * 65, "a\nb", "a b", "a,b", ""])
def test_ids_that_could_escape_a_path_or_a_name_are_refused(bad: str) -> None:
    taps, subnets, addresses = _rows(["web"], ["fa:16:3e:00:01:01"])
    assert not desired.valid_id(bad)
    assert desired.build([{**taps[0], "network_id": bad}], subnets, addresses).networks == {}
    subnets = [{**subnets[0], "id": bad}]
    spec = desired.build(taps, subnets, addresses).networks[NET]
    assert spec.dhcp is None  # its only subnet was left out: no DHCP rather than a bad tag
    with pytest.raises(ValueError):
        desired.DhcpSubnet(
            id=bad, cidr=desired.IPv4Network("10.0.0.0/24"), server_ip=IPv4Address("10.0.0.2"), gateway=None
        )


@pytest.mark.parametrize("hostname", HOSTILE_HOSTNAMES)
def test_a_dhcp_host_entry_refuses_a_hostile_hostname_or_mac(hostname: str) -> None:
    with pytest.raises(ValueError):
        desired.DhcpHost(mac="fa:16:3e:00:00:01", hostname=hostname, ip=IPv4Address("10.0.0.5"))
    with pytest.raises(ValueError):
        desired.DhcpHost(mac=HOSTILE_MACS[0], hostname="web", ip=IPv4Address("10.0.0.5"))


def test_the_dnsmasq_command_line_is_one_argument_per_option(tmp_path: Path) -> None:
    built = desired.build(*_rows(["web"], ["fa:16:3e:00:01:01"]))
    spec = built.networks[NET].dhcp
    assert spec is not None
    paths = dnsmasq.Paths(tmp_path / "dir with space;$(x)")
    try:
        argv = dnsmasq.command(spec, paths, "nobody", "nogroup")
    except Exception as exc:  # no dnsmasq on this machine: the command cannot be built
        pytest.skip(f"dnsmasq unavailable: {exc}")
    assert all("\n" not in a and "\x00" not in a for a in argv)
    assert f"--pid-file={paths.pid}" in argv and f"--dhcp-hostsfile={paths.host}" in argv
    assert "--conf-file=/dev/null" in argv  # no configuration but what we pass


# --- processes ---------------------------------------------------------------------------------------------

SHELL_CALLS = {
    ("os", "system"),
    ("os", "popen"),
    ("subprocess", "getoutput"),
    ("subprocess", "getstatusoutput"),
    ("asyncio", "create_subprocess_shell"),
}


def _product_sources() -> list[Path]:
    return [
        p
        for package in ("actors", "api", "hostagent", "protocol", "actorstack")
        for p in sorted((ROOT / package).rglob("*.py"))
    ]


def test_no_product_code_runs_a_shell() -> None:
    """Every process is started from an argv list: no shell=True, os.system, os.popen,
    subprocess.getoutput or create_subprocess_shell anywhere in the product."""
    offenders = []
    sources = _product_sources()
    assert len(sources) > 50
    for path in sources:
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if not isinstance(node, ast.Call):
                continue
            func = node.func
            if (
                isinstance(func, ast.Attribute)
                and isinstance(func.value, ast.Name)
                and (func.value.id, func.attr) in SHELL_CALLS
            ):
                offenders.append(f"{path.relative_to(ROOT)}:{node.lineno} {func.value.id}.{func.attr}")
            for keyword in node.keywords:
                if keyword.arg == "shell" and not (
                    isinstance(keyword.value, ast.Constant) and keyword.value.value is False
                ):
                    offenders.append(f"{path.relative_to(ROOT)}:{node.lineno} shell=")
    assert offenders == []


async def test_qemu_img_gets_a_hostile_path_as_one_argument(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[tuple[str, ...]] = []
    real = asyncio.create_subprocess_exec

    async def recording(*argv: str, **kwargs: Any) -> Any:
        seen.append(argv)
        return await real(*argv, **kwargs)

    monkeypatch.setattr(asyncio, "create_subprocess_exec", recording)
    hostile = tmp_path / "a b;touch pwned $(touch pwned2) `touch pwned3`|x\n--help"
    with pytest.raises(qemu_img.QemuImgError):
        await qemu_img.info(hostile, "raw")  # no such file: qemu-img says so, nothing else runs
    assert seen and seen[0][-1] == str(hostile) and seen[0][-3:-1] == ("-f", "raw")
    assert not list(tmp_path.iterdir()) and not Path("pwned").exists()


# --- the metadata service -------------------------------------------------------------------------


def _instance(**overrides: Any) -> Instance:
    row = {
        "id": "0f1e2d3c-4b5a-4968-8776-655443322110",
        "display_name": "web",
        "hostname": "web",
        "project_id": "proj",
        "availability_zone": "nova",
        "launch_index": 0,
        "key_name": "key",
        "key_data": "ssh-ed25519 AAAA k",
        "user_data": None,
        "metadata": {},
        "reservation_id": "r-1",
        "flavor": {"name": "m1.tiny"},
        "image_id": None,
        "port_id": "p1",
        "mac": "fa:16:3e:00:00:01",
    } | overrides
    return Instance.from_row(row, "10.0.0.10")


@pytest.mark.parametrize(
    "value",
    [*PRINTABLE_HOSTILE, *CONTROL_HOSTILE, MEGABYTE],
    ids=[*map(repr, PRINTABLE_HOSTILE), *map(repr, CONTROL_HOSTILE), "1MB"],
)
def test_meta_data_json_carries_hostile_values_exactly(value: str) -> None:
    inst = _instance(display_name=value, metadata=json.dumps({value: value}), key_name=value, key_data=value)
    text = json.dumps(openstack_meta_data(inst))
    back = json.loads(text)
    assert back["name"] == value and back["meta"] == {value: value}
    assert back["public_keys"] == {value: value} and back["keys"][0]["data"] == value
    assert "\n" not in text and "\x00" not in text  # one JSON line, every character escaped


def test_user_data_is_served_as_the_bytes_given() -> None:
    raw = b"#!/bin/sh\n<&>]]>\x00\xff" + MEGABYTE.encode()
    assert _instance(user_data=base64.b64encode(raw).decode()).user_data == raw
    assert _instance(user_data="not base64 <&>\n").user_data is None  # not served rather than mangled


def test_an_ec2_listing_holds_one_line_per_entry_whatever_the_key_name() -> None:
    for key_name in ("key\nhostname", "key\r\nx", "key\x00", "k" * 1000):
        tree = ec2_meta_data(_instance(key_name=key_name))
        listing = ec2_listing(tree["public-keys"]).split("\n")
        assert len(listing) == 1 and listing[0].startswith("0=")
        assert ec2_listing(tree).count("\n") == len(tree) - 1
