"""The metadata service's answers (Nova's EC2 and OpenStack trees) for a known instance, and the
networking interface's null implementation: no kernel, no database. The service on the real
kernel, with the source checks, is in test_linuxbridge.py."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest

from hostagent.network import NetworkSettings, NullNetworking
from hostagent.network.metadata import (
    Instance,
    _ec2,
    _openstack,
    ec2_listing,
    ec2_meta_data,
    network_data,
    openstack_meta_data,
)

UUID = "0f1e2d3c-4b5a-4968-8776-655443322110"
IMAGE = "abcdef01-0000-4000-8000-000000000000"
KEY = "ssh-ed25519 AAAA k"


def instance(**overrides: Any) -> Instance:
    row = {
        "id": UUID,
        "display_name": "web 1",
        "hostname": "web-1",
        "project_id": "proj",
        "availability_zone": "nova",
        "launch_index": 0,
        "key_name": "mykey",
        "key_data": KEY,
        "user_data": base64.b64encode(b"#!/bin/sh\necho hi\n").decode(),
        "metadata": {"a": "b"},
        "reservation_id": "r-1",
        "flavor": {"name": "m1.tiny"},
        "image_id": IMAGE,
        "port_id": "p1",
        "mac": "fa:16:3e:00:00:01",
    } | overrides
    return Instance.from_row(row, "10.0.0.10")


def text(response: Any) -> str:
    return response.body.decode() if isinstance(response.body, bytes) else response.text


async def openstack(inst: Instance, *parts: str) -> Any:
    return await _openstack(None, inst, list(parts))  # type: ignore[arg-type]  # no network_data here


def test_ec2_tree_as_nova_lists_it() -> None:
    inst = instance()
    tree = ec2_meta_data(inst)
    assert (tree["instance-id"], tree["ami-id"]) == ("i-0f1e2d3c", "ami-abcdef01")
    assert tree["hostname"] == tree["local-hostname"] == "web-1.novalocal"
    assert ec2_listing(tree["public-keys"]) == "0=mykey"
    assert ec2_listing(tree["public-keys"]["0"]) == "openssh-key"
    listing = ec2_listing(tree).splitlines()
    assert {"placement/", "public-keys/", "local-ipv4", "instance-id", "mac"} <= set(listing)
    assert text(_ec2(inst, ["latest"])) == "meta-data/\nuser-data"
    assert text(_ec2(inst, ["2009-04-04", "meta-data", "placement", "availability-zone"])) == "nova"
    assert text(_ec2(inst, ["latest", "user-data"])) == "#!/bin/sh\necho hi\n"
    assert _ec2(inst, ["latest", "meta-data", "public-keys", "0", "_name"]).status == 404
    assert _ec2(inst, ["2099-01-01", "meta-data"]).status == 404
    without = instance(user_data=None, key_name=None, key_data=None)
    assert _ec2(without, ["latest", "user-data"]).status == 404
    assert "public-keys/" not in ec2_listing(ec2_meta_data(without))


async def test_openstack_tree() -> None:
    inst = instance()
    data = openstack_meta_data(inst)
    assert data["uuid"] == UUID and data["public_keys"] == {"mykey": KEY}
    assert data["keys"] == [{"name": "mykey", "type": "ssh", "data": KEY}]
    assert (data["meta"], data["devices"], data["hostname"], data["name"]) == (
        {"a": "b"},
        [],
        "web-1.novalocal",
        "web 1",
    )
    assert len(base64.b64decode(data["random_seed"])) == 512
    versions = text(await openstack(inst))
    assert versions.splitlines()[-1] == "latest" and "2013-10-17" in versions
    response = await openstack(inst, "latest", "meta_data.json")
    assert response.content_type == "application/json" and json.loads(text(response))["uuid"] == UUID
    assert "user_data" in text(await openstack(inst, "latest"))
    assert (await openstack(instance(user_data=None), "latest", "user_data")).status == 404
    assert json.loads(text(await openstack(inst, "2018-08-27", "vendor_data2.json"))) == {}


def test_network_data() -> None:
    common = {"port_id": "p1", "network_id": "n1", "mac": "fa:16:3e:00:00:01", "mtu": 1450}
    dhcp = {
        "ip": "10.0.0.10",
        "prefixlen": 24,
        "gateway": "10.0.0.1",
        "ip_version": 4,
        "enable_dhcp": True,
        "dns_nameservers": ["192.0.2.53"],
        "host_routes": [],
    }
    static = {
        "ip": "10.9.0.5",
        "prefixlen": 16,
        "gateway": None,
        "ip_version": 4,
        "enable_dhcp": False,
        "dns_nameservers": [],
        "host_routes": [{"destination": "10.8.0.0/16", "nexthop": "10.9.0.1"}],
    }
    data = network_data([common | dhcp, common | static])
    assert data["links"] == [
        {
            "id": "tapp1",
            "vif_id": "p1",
            "type": "bridge",
            "mtu": 1450,
            "ethernet_mac_address": "fa:16:3e:00:00:01",
        }
    ]
    assert data["networks"][0] == {"id": "network0", "link": "tapp1", "network_id": "n1", "type": "ipv4_dhcp"}
    second = data["networks"][1]
    assert second["routes"] == [{"network": "10.8.0.0", "netmask": "255.255.0.0", "gateway": "10.9.0.1"}]
    assert (second["type"], second["ip_address"], second["netmask"]) == ("ipv4", "10.9.0.5", "255.255.0.0")
    assert data["services"] == [{"type": "dns", "address": "192.0.2.53"}]


async def test_null_networking_plugs_nothing(tmp_path: Any) -> None:
    async with NullNetworking() as null:
        assert await null.plug("s") == []
        await null.unplug("s")
        assert await null.converge() == {}


@pytest.mark.parametrize("owner", ["", "x" * 256, "a\nb"])
def test_settings_need_an_owner_tag_that_fits_an_alias(owner: str, tmp_path: Any) -> None:
    with pytest.raises(ValueError):
        NetworkSettings(owner=owner, state_dir=tmp_path, hosts=frozenset())
