"""The API's own OpenAPI 3.1 description, served unauthenticated at `GET /openapi.json`.

The document is built from the application's route table at the first request, so every
registered route is in it and none that is not (tests/fuzz checks both ways, and fuzzes every
operation against a running cloud). What the route table cannot say is written here: the JSON
Schemas of the main request bodies, taken from what the handlers check (api/validate.py,
api/volume/validate.py, api/identity/validate.py, api/network/attributes.py and the per-resource
specs, api/image/schema.py), and the shape of each service's error body. The query parameters of
an operation are its handler's `query_parameters` (the network and volume lists declare theirs).

The schemas describe what a handler *accepts*; a body that fits may still be refused for what it
refers to (an unknown flavor, a taken name, a quota): those are 4xx answers, never 5xx.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any

from aiohttp import web

from api.context import CTX, json_response, public
from api.errors import service_of
from api.image import imports as image_imports
from api.image import schema as image_schema
from api.image import tasks as image_tasks
from api.image.metadefs import REQUEST_BODIES as METADEF_BODIES
from protocol import power

OPENAPI_VERSION = "3.1.0"
# The methods a catch-all route ("*", the not-yet-available parts of a service) is described with.
ANY_METHODS = ("get", "put", "post", "delete", "patch")
# Filled at the first request: the route table is frozen once the app runs, so it is built once.
_DOCUMENT = web.AppKey("openapi_document", dict)
_PARAM = re.compile(r"{([^}:]+)(?::[^}]*)?}")

Schema = dict[str, Any]

# --- building blocks ---------------------------------------------------------------------------------

NAME: Schema = {"type": "string", "minLength": 1, "maxLength": 255}
TEXT: Schema = {"type": "string", "maxLength": 255}
DESCRIPTION: Schema = {"type": ["string", "null"], "maxLength": 65535}
UUID: Schema = {"type": "string", "format": "uuid"}
BOOL: Schema = {"type": "boolean"}
# Nova's parameter_types.boolean: a JSON boolean or one of the usual spellings.
NOVA_BOOL: Schema = {
    "anyOf": [
        BOOL,
        {"type": "string", "enum": ["true", "false", "True", "False", "1", "0", "on", "off", "yes", "no"]},
    ]
}
INT32 = 0x7FFFFFFF
METADATA: Schema = {
    "type": "object",
    "maxProperties": 128,
    "propertyNames": {"minLength": 1, "maxLength": 255},
    "additionalProperties": {"type": "string", "maxLength": 255},
}
TAGS: Schema = {"type": "array", "items": {"type": "string", "minLength": 1, "maxLength": 255}}


def obj(properties: dict[str, Schema], *required: str, extra: bool = False) -> Schema:
    """A JSON object with these properties; closed unless `extra` (the handlers refuse unknown keys)."""
    schema: Schema = {"type": "object", "properties": properties, "additionalProperties": extra}
    if required:
        schema["required"] = list(required)
    return schema


def wrapped(key: str, properties: dict[str, Schema], *required: str) -> Schema:
    """OpenStack's `{"server": {...}}` envelope."""
    return obj({key: obj(properties, *required)}, key)


def or_bulk(key: str, single: Schema) -> Schema:
    """A Neutron create: `{"network": {...}}`, or several at once, `{"networks": [{...}, ...]}`."""
    item = single["properties"][key]
    return {"oneOf": [single, obj({key + "s": {"type": "array", "minItems": 1, "items": item}}, key + "s")]}


def int_or_str(minimum: int, maximum: int = INT32) -> Schema:
    """Nova takes integers as numbers or decimal strings."""
    return {
        "anyOf": [
            {"type": "integer", "minimum": minimum, "maximum": maximum},
            {"type": "string", "pattern": "^[0-9]+$"},
        ]
    }


# --- request bodies, by (method, path) ----------------------------------------------------------------

_COMPUTE = "/compute/v2.1"
_VOLUME = "/volume/v3/{project_id}"
_NET = "/networking/v2.0"
_ID = "/identity/v3"

_SERVER_NETWORK: Schema = obj({"uuid": UUID, "port": UUID, "fixed_ip": {"type": "string"}, "tag": TEXT})
_BLOCK_DEVICE: Schema = obj(
    {
        "boot_index": {"type": ["integer", "string", "null"]},
        "uuid": {"type": "string"},
        "source_type": {"type": "string", "enum": ["image", "volume", "blank", "snapshot"]},
        "destination_type": {"type": "string", "enum": ["volume", "local"]},
        "volume_size": int_or_str(1),
        "delete_on_termination": NOVA_BOOL,
        "device_name": TEXT,
        "disk_bus": TEXT,
        "device_type": TEXT,
        "tag": TEXT,
        "volume_type": {"type": ["string", "null"]},
    }
)
_SERVER_CREATE: Schema = obj(
    {
        "server": obj(
            {
                "name": NAME,
                "imageRef": {"type": "string"},
                "flavorRef": {"type": "string"},
                "networks": {
                    "anyOf": [
                        {"type": "string", "enum": ["auto", "none"]},
                        {"type": "array", "items": _SERVER_NETWORK},
                    ]
                },
                "availability_zone": TEXT,
                "key_name": TEXT,
                "metadata": METADATA,
                "user_data": {"type": "string", "maxLength": 65535},
                "min_count": int_or_str(1),
                "max_count": int_or_str(1),
                "return_reservation_id": NOVA_BOOL,
                "description": DESCRIPTION,
                "hostname": TEXT,
                "security_groups": {"type": "array", "items": obj({"name": TEXT})},
                "config_drive": NOVA_BOOL,
                "adminPass": {"type": "string"},
                "OS-DCF:diskConfig": {"type": "string", "enum": ["AUTO", "MANUAL"]},
                "block_device_mapping_v2": {"type": "array", "items": _BLOCK_DEVICE},
                "tags": TAGS,
                "accessIPv4": {"type": "string", "format": "ipv4"},
                "accessIPv6": {"type": "string", "format": "ipv6"},
            },
            "name",
            "flavorRef",
        ),
        "os:scheduler_hints": obj({"group": {"type": "string"}}, extra=True),
        "OS-SCH-HNT:scheduler_hints": obj({"group": {"type": "string"}}, extra=True),
    },
    "server",
)
_SERVER_UPDATE = wrapped(
    "server",
    {
        "name": NAME,
        "description": DESCRIPTION,
        "hostname": TEXT,
        "accessIPv4": {"type": "string"},
        "accessIPv6": {"type": "string"},
        "OS-DCF:diskConfig": {"type": "string", "enum": ["AUTO", "MANUAL"]},
    },
)


def _power_action_bodies() -> list[Schema]:
    """One body per power action of protocol/power.py: `{"os-stop": null}`, or with the `type`
    that selects among several rows (`{"reboot": {"type": "SOFT"}}`)."""
    types: dict[str, list[str]] = {}
    for row in power.ROWS:
        types.setdefault(row.api_action, [])
        if row.api_type is not None:
            types[row.api_action].append(row.api_type)
    return [
        obj(
            {key: obj({"type": {"type": "string", "enum": kinds}}, "type") if kinds else {"type": "null"}},
            key,
        )
        for key, kinds in types.items()
    ]


_SERVER_ACTION: Schema = {
    "oneOf": [
        *_power_action_bodies(),
        obj(
            {"os-getConsoleOutput": obj({"length": {"type": ["integer", "string", "null"]}})},
            "os-getConsoleOutput",
        ),
        obj({"lock": {"oneOf": [{"type": "null"}, obj({"locked_reason": NAME})]}}, "lock"),
        *(obj({key: {"type": "null"}}, key) for key in ("unlock", "restore", "forceDelete")),
        *(
            obj({key: obj({"name": NAME}, "name")}, key)
            for key in ("addSecurityGroup", "removeSecurityGroup")
        ),
    ]
}
# Nova's proxy of Neutron's groups (api/compute/security_groups.py): names and descriptions of at
# most 255 characters (empty too), and rules as Nova takes them.
_NOVA_SECURITY_GROUP = wrapped("security_group", {"name": TEXT, "description": TEXT}, "name", "description")
_NOVA_PORT: Schema = {"anyOf": [{"type": "integer", "minimum": -1, "maximum": 65535}, {"type": "null"}]}
_NOVA_SECURITY_GROUP_RULE = wrapped(
    "security_group_rule",
    {
        "parent_group_id": UUID,
        "ip_protocol": {
            "type": ["string", "null"],
            "enum": ["tcp", "udp", "icmp", "TCP", "UDP", "ICMP", None],
        },
        "from_port": _NOVA_PORT,
        "to_port": _NOVA_PORT,
        "cidr": {"type": ["string", "null"]},
        "group_id": {"type": ["string", "null"], "format": "uuid"},
    },
    "parent_group_id",
)
_AGGREGATE_ZONE: Schema = {"type": ["string", "null"], "minLength": 1, "maxLength": 255, "pattern": "^[^:]*$"}
_AGGREGATE_HOST: Schema = obj({"host": NAME}, "host")
_AGGREGATE_ACTION: Schema = {
    "oneOf": [
        obj({"add_host": _AGGREGATE_HOST}, "add_host"),
        obj({"remove_host": _AGGREGATE_HOST}, "remove_host"),
        obj(
            {
                "set_metadata": obj(
                    {"metadata": {"type": "object", "additionalProperties": {"type": ["string", "null"]}}},
                    "metadata",
                )
            },
            "set_metadata",
        ),
    ]
}
_FLAVOR_CREATE = wrapped(
    "flavor",
    {
        "name": NAME,
        "id": {"type": ["string", "null"], "minLength": 1, "maxLength": 255},
        "ram": int_or_str(1),
        "vcpus": int_or_str(1),
        "disk": int_or_str(0),
        "OS-FLV-EXT-DATA:ephemeral": int_or_str(0),
        "swap": int_or_str(0),
        "rxtx_factor": {"type": ["number", "string"]},
        "os-flavor-access:is_public": NOVA_BOOL,
        "description": DESCRIPTION,
    },
    "name",
    "ram",
    "vcpus",
    "disk",
)
_FLAVOR_ACTION: Schema = {
    "oneOf": [
        obj({"addTenantAccess": obj({"tenant": TEXT}, "tenant")}, "addTenantAccess"),
        obj({"removeTenantAccess": obj({"tenant": TEXT}, "tenant")}, "removeTenantAccess"),
    ]
}
_EXTRA_SPECS = obj(
    {"extra_specs": {"type": "object", "additionalProperties": {"type": "string", "maxLength": 255}}},
    "extra_specs",
)
_KEYPAIR_CREATE = wrapped(
    "keypair",
    {
        "name": {"type": "string", "minLength": 1, "maxLength": 255, "pattern": r"^[a-zA-Z0-9 _.@-]+$"},
        "public_key": {"type": "string"},
        "type": {"type": "string", "enum": ["ssh", "x509"]},
        "user_id": {"type": "string"},
    },
    "name",
)
_SERVER_GROUP_CREATE = wrapped(
    "server_group",
    {
        "name": NAME,
        "policy": {
            "type": "string",
            "enum": ["affinity", "anti-affinity", "soft-affinity", "soft-anti-affinity"],
        },
        "policies": {"type": "array", "minItems": 1, "maxItems": 1, "items": {"type": "string"}},
        "rules": obj({"max_server_per_host": int_or_str(1)}),
    },
    "name",
)
_QUOTA_SET: Schema = obj(
    {"quota_set": {"type": "object", "additionalProperties": {"type": ["integer", "string", "boolean"]}}},
    "quota_set",
)
_SERVICE_UPDATE: Schema = obj(
    {
        "status": {"type": "string", "enum": ["enabled", "disabled"]},
        "disabled_reason": {"type": ["string", "null"], "maxLength": 255},
        "forced_down": NOVA_BOOL,
    }
)
_ATTACH = wrapped(
    "volumeAttachment",
    {
        "volumeId": UUID,
        "device": {"type": ["string", "null"]},
        "tag": TEXT,
        "delete_on_termination": NOVA_BOOL,
    },
    "volumeId",
)

_VOLUME_CREATE: Schema = obj(
    {
        "volume": obj(
            {
                "name": {"type": ["string", "null"], "maxLength": 255},
                "description": {"type": ["string", "null"], "maxLength": 255},
                "display_name": {"type": ["string", "null"], "maxLength": 255},
                "display_description": {"type": ["string", "null"], "maxLength": 255},
                "size": int_or_str(1),
                "volume_type": {"type": ["string", "null"]},
                "metadata": {
                    "type": ["object", "null"],
                    "additionalProperties": {"type": "string", "maxLength": 255},
                },
                "imageRef": {"type": ["string", "null"]},
                "image_id": {"type": ["string", "null"]},
                "availability_zone": {"type": ["string", "null"]},
                "multiattach": {"type": ["boolean", "null"]},
                "snapshot_id": {"type": "null"},
                "source_volid": {"type": "null"},
                "consistencygroup_id": {"type": "null"},
                "bootable": {"type": "boolean"},
            },
            "size",
        ),
        "OS-SCH-HNT:scheduler_hints": {"type": ["object", "null"]},
    },
    "volume",
)
_VOLUME_UPDATE = wrapped(
    "volume",
    {
        "name": {"type": ["string", "null"], "maxLength": 255},
        "description": {"type": ["string", "null"], "maxLength": 255},
        "display_name": {"type": ["string", "null"], "maxLength": 255},
        "display_description": {"type": ["string", "null"], "maxLength": 255},
        "metadata": {
            "type": ["object", "null"],
            "additionalProperties": {"type": "string", "maxLength": 255},
        },
    },
)
_VOLUME_ACTION: Schema = {
    "oneOf": [
        obj({"os-extend": obj({"new_size": int_or_str(1)}, "new_size")}, "os-extend"),
        obj(
            {"os-reset_status": obj({"status": TEXT, "attach_status": TEXT, "migration_status": TEXT})},
            "os-reset_status",
        ),
        obj(
            {"os-set_bootable": obj({"bootable": {"type": ["boolean", "string"]}}, "bootable")},
            "os-set_bootable",
        ),
        obj(
            {"os-update_readonly_flag": obj({"readonly": {"type": ["boolean", "string"]}}, "readonly")},
            "os-update_readonly_flag",
        ),
        obj({"os-set_image_metadata": obj({"metadata": METADATA}, "metadata")}, "os-set_image_metadata"),
        obj({"os-unset_image_metadata": obj({"key": TEXT}, "key")}, "os-unset_image_metadata"),
        obj({"os-show_image_metadata": {"type": ["object", "null"]}}, "os-show_image_metadata"),
    ]
}
_META = obj(
    {"metadata": {"type": "object", "additionalProperties": {"type": "string", "maxLength": 255}}}, "metadata"
)
_META_ITEM = obj(
    {
        "meta": {
            "type": "object",
            "minProperties": 1,
            "maxProperties": 1,
            "additionalProperties": {"type": "string", "maxLength": 255},
        }
    },
    "meta",
)

_IPV4_CIDR: Schema = {"type": "string", "pattern": r"^([0-9]{1,3}\.){3}[0-9]{1,3}/[0-9]{1,2}$"}
_NETWORK = {
    "name": TEXT,
    "description": TEXT,
    "admin_state_up": BOOL,
    "shared": BOOL,
    "router:external": BOOL,
    "mtu": {"type": "integer", "minimum": 68, "maximum": INT32},
    "port_security_enabled": BOOL,
    "dns_domain": {"type": "string", "maxLength": 255},
}
_NETWORK_CREATE = wrapped(
    "network",
    {
        **_NETWORK,
        "availability_zone_hints": {"type": "array", "items": TEXT},
        "tags": TAGS,
        "project_id": TEXT,
        "tenant_id": TEXT,
        "provider:network_type": {"type": "string"},
        "provider:physical_network": {"type": ["string", "null"]},
        "provider:segmentation_id": {"type": ["integer", "null"]},
    },
)
_POOL: Schema = obj(
    {"start": {"type": "string", "format": "ipv4"}, "end": {"type": "string", "format": "ipv4"}},
    "start",
    "end",
)
_ROUTE: Schema = obj(
    {"destination": _IPV4_CIDR, "nexthop": {"type": "string", "format": "ipv4"}}, "destination", "nexthop"
)
_SUBNET = {
    "name": TEXT,
    "description": TEXT,
    "gateway_ip": {"type": ["string", "null"], "format": "ipv4"},
    "allocation_pools": {"type": "array", "items": _POOL},
    "dns_nameservers": {"type": "array", "items": {"type": "string", "format": "ipv4"}},
    "host_routes": {"type": "array", "items": _ROUTE},
    "enable_dhcp": BOOL,
    "segment_id": {"type": "null"},
    "service_types": {"type": "array", "maxItems": 0},
}
_SUBNET_CREATE = wrapped(
    "subnet",
    {
        **_SUBNET,
        "network_id": UUID,
        "ip_version": {"type": "integer", "enum": [4, 6]},
        "cidr": _IPV4_CIDR,
        "ipv6_ra_mode": {
            "type": ["string", "null"],
            "enum": ["slaac", "dhcpv6-stateful", "dhcpv6-stateless", None],
        },
        "ipv6_address_mode": {
            "type": ["string", "null"],
            "enum": ["slaac", "dhcpv6-stateful", "dhcpv6-stateless", None],
        },
        "tags": TAGS,
        "project_id": TEXT,
        "tenant_id": TEXT,
        "subnetpool_id": {"type": "null"},
        "use_default_subnetpool": {"type": "boolean", "enum": [False]},
    },
    "network_id",
    "cidr",
    "ip_version",
)
_FIXED_IP: Schema = obj({"subnet_id": UUID, "ip_address": {"type": "string", "format": "ipv4"}})
_PORT = {
    "name": TEXT,
    "description": TEXT,
    "admin_state_up": BOOL,
    "mac_address": {"type": "string", "pattern": "^([0-9a-f]{2}:){5}[0-9a-f]{2}$"},
    "fixed_ips": {"type": "array", "items": _FIXED_IP},
    "device_id": {"type": ["string", "null"], "maxLength": 255},
    "device_owner": {"type": ["string", "null"], "maxLength": 255},
    "allowed_address_pairs": {
        "type": "array",
        "items": obj({"ip_address": {"type": "string"}, "mac_address": {"type": "string"}}, "ip_address"),
    },
    "port_security_enabled": BOOL,
    "dns_name": {"type": "string", "maxLength": 63},
    "binding:host_id": {"type": ["string", "null"], "maxLength": 255},
    "binding:profile": {"type": ["object", "null"]},
    "binding:vnic_type": {"type": "string", "enum": ["normal", "direct", "macvtap", "baremetal"]},
    "security_groups": {"type": "array", "maxItems": 0},
    "extra_dhcp_opts": {"type": "array", "maxItems": 0},
}
_PORT_CREATE = wrapped(
    "port", {**_PORT, "network_id": UUID, "tags": TAGS, "project_id": TEXT, "tenant_id": TEXT}, "network_id"
)
_NET_QUOTA = obj(
    {"quota": {"type": "object", "additionalProperties": {"type": ["integer", "string", "boolean"]}}}, "quota"
)
_NET_TAGS = obj({"tags": TAGS}, "tags")

_IMAGE_WRITABLE = {
    k: v for k, v in image_schema.IMAGE_PROPERTIES.items() if k in image_schema.MUTABLE or k == "id"
}
_IMAGE_CREATE: Schema = {
    "type": "object",
    "properties": _IMAGE_WRITABLE,
    "additionalProperties": image_schema.EXTRA_PROPERTY,
}
_IMAGE_PATCH: Schema = {
    "type": "array",
    "items": obj(
        {
            "op": {"type": "string", "enum": ["add", "replace", "remove"]},
            "path": {"type": "string", "pattern": "^/"},
            "value": {},
        },
        "op",
        "path",
    ),
}
_IMAGE_MEMBER_ADD = obj({"member": {"type": "string", "minLength": 1, "maxLength": 255}}, "member")
_IMAGE_MEMBER_UPDATE = obj(
    {"status": {"type": "string", "enum": list(image_schema.MEMBER_STATUSES)}}, "status"
)

_AUTH: Schema = obj(
    {
        "auth": obj(
            {
                "identity": obj(
                    {
                        "methods": {
                            "type": "array",
                            "items": {
                                "type": "string",
                                "enum": ["password", "token", "application_credential"],
                            },
                        },
                        "password": obj(
                            {
                                "user": obj(
                                    {
                                        "id": TEXT,
                                        "name": TEXT,
                                        "password": {"type": "string"},
                                        "domain": obj({"id": TEXT, "name": TEXT}),
                                    }
                                )
                            }
                        ),
                        "token": obj({"id": {"type": "string"}}, "id"),
                        "application_credential": obj(
                            {
                                "id": TEXT,
                                "name": TEXT,
                                "secret": {"type": "string"},
                                "user": obj({"id": TEXT, "name": TEXT}),
                            }
                        ),
                    },
                    "methods",
                ),
                "scope": {
                    "anyOf": [
                        {"type": "string", "enum": ["unscoped"]},
                        obj(
                            {
                                "project": obj(
                                    {"id": TEXT, "name": TEXT, "domain": obj({"id": TEXT, "name": TEXT})}
                                ),
                                "domain": obj({"id": TEXT, "name": TEXT}),
                                "system": obj({"all": BOOL}),
                            }
                        ),
                    ]
                },
            },
            "identity",
        )
    },
    "auth",
)
_PROJECT = {
    "name": {"type": "string", "minLength": 1, "maxLength": 64},
    "description": DESCRIPTION,
    "enabled": BOOL,
    "tags": TAGS,
    "options": {"type": "object"},
}
_PROJECT_CREATE = wrapped(
    "project",
    {
        **_PROJECT,
        "domain_id": TEXT,
        "parent_id": {"type": ["string", "null"]},
        "is_domain": {"type": "boolean", "enum": [False]},
    },
    "name",
)
_USER = {
    "name": NAME,
    "password": {"type": ["string", "null"], "maxLength": 4096},
    "enabled": BOOL,
    "default_project_id": {"type": ["string", "null"], "maxLength": 64},
    "email": {"type": ["string", "null"]},
    "description": DESCRIPTION,
    "options": {"type": "object"},
}
_USER_CREATE = wrapped("user", {**_USER, "domain_id": TEXT}, "name")
_PASSWORD = wrapped(
    "user",
    {
        "original_password": {"type": "string", "maxLength": 4096},
        "password": {"type": "string", "maxLength": 4096},
    },
    "original_password",
    "password",
)
_ROLE_CREATE = wrapped(
    "role",
    {
        "name": NAME,
        "description": DESCRIPTION,
        "domain_id": {"type": ["string", "null"]},
        "options": {"type": "object"},
    },
    "name",
)
_APP_CREDENTIAL = wrapped(
    "application_credential",
    {
        "name": NAME,
        "description": DESCRIPTION,
        "secret": {"type": ["string", "null"], "maxLength": 4096},
        "expires_at": {"type": ["string", "null"]},
        "roles": {"type": "array", "items": obj({"id": TEXT, "name": TEXT})},
        "unrestricted": BOOL,
        "access_rules": {
            "type": "array",
            "items": obj(
                {
                    "service": {"type": "string", "minLength": 1, "maxLength": 64},
                    "path": {"type": "string", "pattern": "^/", "maxLength": 128},
                    "method": {"type": "string", "enum": ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"]},
                },
                "service",
                "path",
                "method",
            ),
        },
    },
    "name",
)
# Keystone's other resources (api/identity/): the known attributes of each (Keystone keeps unknown
# ones too, but the fuzzer sends what the API reference documents).
_DOMAIN = {
    "name": {"type": "string", "minLength": 1, "maxLength": 64},
    "description": DESCRIPTION,
    "enabled": BOOL,
}
_GROUP = {"name": {"type": "string", "minLength": 1, "maxLength": 64}, "description": DESCRIPTION}
_REGION = {
    "description": {"type": "string", "maxLength": 255},
    "parent_region_id": {"type": ["string", "null"]},
}
_SERVICE = {"type": NAME, "name": TEXT, "description": DESCRIPTION, "enabled": BOOL}
_ENDPOINT = {
    "service_id": TEXT,
    "interface": {"type": "string", "enum": ["public", "internal", "admin"]},
    "url": {"type": "string", "pattern": "^[a-zA-Z][a-zA-Z0-9+.-]*://[^ ]+$", "maxLength": 225},
    "region_id": TEXT,
    "enabled": BOOL,
}
_POLICY = {"type": NAME, "blob": {"type": "string", "maxLength": 65535}}
_CREDENTIAL = {
    "user_id": TEXT,
    "project_id": {"type": ["string", "null"]},
    "type": {"type": "string", "enum": ["totp", "cert"]},
    "blob": {"type": "string", "maxLength": 65535},
}
_TRUST = wrapped(
    "trust",
    {
        "trustor_user_id": TEXT,
        "trustee_user_id": TEXT,
        "project_id": {"type": ["string", "null"]},
        "impersonation": BOOL,
        "roles": {"type": "array", "items": obj({"id": TEXT})},
        "expires_at": {"type": ["string", "null"], "format": "date-time"},
        "remaining_uses": {"type": ["integer", "null"], "minimum": 1, "maximum": INT32},
        "allow_redelegation": BOOL,
    },
    "trustor_user_id",
    "trustee_user_id",
    "impersonation",
)
_ENDPOINT_GROUP = {
    "name": NAME,
    "description": DESCRIPTION,
    "filters": obj(
        {"interface": {"type": "string", "enum": ["public", "internal", "admin"]}, "service_id": TEXT}
    ),
}
_DOMAIN_CONFIG = obj(
    {
        "config": obj(
            {
                "identity": obj({"driver": TEXT, "list_limit": {"type": ["integer", "null"]}}),
                "ldap": obj({"url": TEXT, "user_tree_dn": TEXT, "suffix": TEXT}),
            }
        )
    },
    "config",
)

REQUEST_BODIES: dict[tuple[str, str], Schema] = {
    ("post", f"{_COMPUTE}/servers"): _SERVER_CREATE,
    ("put", f"{_COMPUTE}/servers/{{server_id}}"): _SERVER_UPDATE,
    ("post", f"{_COMPUTE}/servers/{{server_id}}/action"): _SERVER_ACTION,
    ("post", f"{_COMPUTE}/servers/{{server_id}}/metadata"): _META,
    ("put", f"{_COMPUTE}/servers/{{server_id}}/metadata"): _META,
    ("put", f"{_COMPUTE}/servers/{{server_id}}/metadata/{{key}}"): _META_ITEM,
    ("post", f"{_COMPUTE}/servers/{{server_id}}/os-volume_attachments"): _ATTACH,
    ("put", f"{_COMPUTE}/servers/{{server_id}}/os-volume_attachments/{{volume_id}}"): _ATTACH,
    ("post", f"{_COMPUTE}/flavors"): _FLAVOR_CREATE,
    ("put", f"{_COMPUTE}/flavors/{{flavor_id}}"): wrapped(
        "flavor", {"description": DESCRIPTION}, "description"
    ),
    ("post", f"{_COMPUTE}/flavors/{{flavor_id}}/action"): _FLAVOR_ACTION,
    ("post", f"{_COMPUTE}/flavors/{{flavor_id}}/os-extra_specs"): _EXTRA_SPECS,
    ("post", f"{_COMPUTE}/flavors/{{flavor_id}}/os-extra-specs"): _EXTRA_SPECS,
    ("post", f"{_COMPUTE}/os-keypairs"): _KEYPAIR_CREATE,
    ("post", f"{_COMPUTE}/os-server-groups"): _SERVER_GROUP_CREATE,
    ("post", f"{_COMPUTE}/os-security-groups"): _NOVA_SECURITY_GROUP,
    ("put", f"{_COMPUTE}/os-security-groups/{{group_id}}"): _NOVA_SECURITY_GROUP,
    ("post", f"{_COMPUTE}/os-security-group-rules"): _NOVA_SECURITY_GROUP_RULE,
    ("put", f"{_COMPUTE}/os-quota-sets/{{project_id}}"): _QUOTA_SET,
    ("put", f"{_COMPUTE}/os-services/{{service_id}}"): _SERVICE_UPDATE,
    ("put", f"{_COMPUTE}/os-quota-class-sets/{{class_name}}"): obj(
        {"quota_class_set": {"type": "object", "additionalProperties": {"type": ["integer", "string"]}}},
        "quota_class_set",
    ),
    ("post", f"{_COMPUTE}/os-aggregates"): wrapped(
        "aggregate", {"name": NAME, "availability_zone": _AGGREGATE_ZONE}, "name"
    ),
    ("put", f"{_COMPUTE}/os-aggregates/{{aggregate_id}}"): wrapped(
        "aggregate", {"name": NAME, "availability_zone": _AGGREGATE_ZONE}
    ),
    ("post", f"{_COMPUTE}/os-aggregates/{{aggregate_id}}/action"): _AGGREGATE_ACTION,
    ("put", f"{_COMPUTE}/servers/{{server_id}}/tags"): obj(
        {
            "tags": {
                "type": "array",
                "maxItems": 50,
                "items": {"type": "string", "minLength": 1, "maxLength": 60},
            }
        },
        "tags",
    ),
    ("post", f"{_VOLUME}/volumes"): _VOLUME_CREATE,
    ("put", f"{_VOLUME}/volumes/{{volume_id}}"): _VOLUME_UPDATE,
    ("post", f"{_VOLUME}/volumes/{{volume_id}}/action"): _VOLUME_ACTION,
    ("post", f"{_VOLUME}/volumes/{{volume_id}}/metadata"): _META,
    ("put", f"{_VOLUME}/volumes/{{volume_id}}/metadata"): _META,
    ("put", f"{_VOLUME}/volumes/{{volume_id}}/metadata/{{key}}"): _META_ITEM,
    ("put", f"{_VOLUME}/os-quota-sets/{{target_project_id}}"): _QUOTA_SET,
    ("post", f"{_NET}/networks"): or_bulk("network", _NETWORK_CREATE),
    ("put", f"{_NET}/networks/{{network_id}}"): wrapped("network", _NETWORK),
    ("post", f"{_NET}/subnets"): or_bulk("subnet", _SUBNET_CREATE),
    ("put", f"{_NET}/subnets/{{subnet_id}}"): wrapped("subnet", _SUBNET),
    ("post", f"{_NET}/ports"): or_bulk("port", _PORT_CREATE),
    ("put", f"{_NET}/ports/{{port_id}}"): wrapped("port", _PORT),
    ("put", f"{_NET}/quotas/{{project_id}}"): _NET_QUOTA,
    ("put", f"{_NET}/{{collection}}/{{resource_id}}/tags"): _NET_TAGS,
    ("post", "/image/v2/images"): _IMAGE_CREATE,
    ("post", "/image/v2/images/{image_id}/members"): _IMAGE_MEMBER_ADD,
    ("put", "/image/v2/images/{image_id}/members/{member_id}"): _IMAGE_MEMBER_UPDATE,
    ("post", "/image/v2/images/{image_id}/import"): image_imports.IMPORT_BODY,
    ("post", "/image/v2/tasks"): image_tasks.CREATE_BODY,
    **METADEF_BODIES,
    ("post", f"{_ID}/auth/tokens"): _AUTH,
    ("post", f"{_ID}/projects"): _PROJECT_CREATE,
    ("patch", f"{_ID}/projects/{{project_id}}"): wrapped("project", _PROJECT),
    ("post", f"{_ID}/users"): _USER_CREATE,
    ("patch", f"{_ID}/users/{{user_id}}"): wrapped("user", _USER),
    ("post", f"{_ID}/users/{{user_id}}/password"): _PASSWORD,
    ("post", f"{_ID}/roles"): _ROLE_CREATE,
    ("post", f"{_ID}/users/{{user_id}}/application_credentials"): _APP_CREDENTIAL,
    ("post", f"{_ID}/domains"): wrapped("domain", _DOMAIN, "name"),
    ("patch", f"{_ID}/domains/{{domain_id}}"): wrapped("domain", _DOMAIN),
    ("post", f"{_ID}/groups"): wrapped("group", {**_GROUP, "domain_id": TEXT}, "name"),
    ("patch", f"{_ID}/groups/{{group_id}}"): wrapped("group", _GROUP),
    ("patch", f"{_ID}/roles/{{role_id}}"): wrapped("role", {"name": NAME, "description": DESCRIPTION}),
    ("post", f"{_ID}/regions"): wrapped("region", _REGION),
    ("put", f"{_ID}/regions/{{region_id}}"): wrapped("region", _REGION),
    ("patch", f"{_ID}/regions/{{region_id}}"): wrapped("region", _REGION),
    ("post", f"{_ID}/services"): wrapped("service", _SERVICE, "type"),
    ("patch", f"{_ID}/services/{{service_id}}"): wrapped("service", _SERVICE),
    ("post", f"{_ID}/endpoints"): wrapped("endpoint", _ENDPOINT, "service_id", "interface", "url"),
    ("patch", f"{_ID}/endpoints/{{endpoint_id}}"): wrapped("endpoint", _ENDPOINT),
    ("post", f"{_ID}/policies"): wrapped("policy", _POLICY, "type", "blob"),
    ("patch", f"{_ID}/policies/{{policy_id}}"): wrapped("policy", _POLICY),
    ("post", f"{_ID}/credentials"): wrapped("credential", _CREDENTIAL, "user_id", "type", "blob"),
    ("patch", f"{_ID}/credentials/{{credential_id}}"): wrapped("credential", _CREDENTIAL),
    ("post", f"{_ID}/users/{{user_id}}/credentials/OS-EC2"): obj({"tenant_id": TEXT}, "tenant_id"),
    ("post", f"{_ID}/OS-TRUST/trusts"): _TRUST,
    ("post", f"{_ID}/OS-EP-FILTER/endpoint_groups"): wrapped(
        "endpoint_group", _ENDPOINT_GROUP, "name", "filters"
    ),
    ("patch", f"{_ID}/OS-EP-FILTER/endpoint_groups/{{group_id}}"): wrapped("endpoint_group", _ENDPOINT_GROUP),
    ("post", f"{_ID}/OS-OAUTH1/consumers"): wrapped("consumer", {"description": DESCRIPTION}),
    ("patch", f"{_ID}/OS-OAUTH1/consumers/{{consumer_id}}"): wrapped(
        "consumer", {"description": DESCRIPTION}
    ),
    ("put", f"{_ID}/domains/{{domain_id}}/config"): _DOMAIN_CONFIG,
    ("patch", f"{_ID}/domains/{{domain_id}}/config"): _DOMAIN_CONFIG,
}
# Bodies that are not JSON objects of application/json.
_MEDIA_BODIES: dict[tuple[str, str], dict[str, Schema]] = {
    ("patch", "/image/v2/images/{image_id}"): {"application/openstack-images-v2.1-json-patch": _IMAGE_PATCH},
    ("put", "/image/v2/images/{image_id}/file"): {
        "application/octet-stream": {"type": "string", "format": "binary"}
    },
    ("put", "/image/v2/images/{image_id}/stage"): {
        "application/octet-stream": {"type": "string", "format": "binary"}
    },
}

# --- error bodies, one shape per service (api/errors.py renders them) ----------------------------------

_FAULT: Schema = obj({"code": {"type": "integer"}, "message": {"type": "string"}}, "code", "message")
ERROR_SCHEMAS: dict[str, Schema] = {
    "ComputeFault": {
        "type": "object",
        "minProperties": 1,
        "maxProperties": 1,
        "additionalProperties": _FAULT,
    },
    "NeutronError": obj(
        {
            "NeutronError": obj(
                {"type": {"type": "string"}, "message": {"type": "string"}, "detail": {"type": "string"}},
                "type",
                "message",
            )
        },
        "NeutronError",
    ),
    "GlanceError": obj(
        {"message": {"type": "string"}, "code": {"type": "string"}, "title": {"type": "string"}},
        "message",
        "code",
        "title",
    ),
    "KeystoneError": obj(
        {
            "error": obj(
                {"code": {"type": "integer"}, "title": {"type": "string"}, "message": {"type": "string"}},
                "code",
                "title",
                "message",
            )
        },
        "error",
    ),
}
_ERROR_OF_SERVICE = {
    "compute": "ComputeFault",
    "volume": "ComputeFault",
    "network": "NeutronError",
    "image": "GlanceError",
    "identity": "KeystoneError",
}


# --- the document --------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class RouteOperation:
    method: str
    path: str  # OpenAPI's template: {name}, without aiohttp's regular expressions
    handler: Any
    patterns: dict[str, str]  # path parameter -> the regular expression the router matches it with


def _group_patterns(pattern: str) -> dict[str, str]:
    """The named groups of a route's compiled pattern, each with its own expression."""
    found: dict[str, str] = {}
    for match in re.finditer(r"\(\?P<([^>]+)>", pattern):
        depth, start = 1, match.end()
        index = start
        while depth and index < len(pattern):
            if pattern[index] == "\\":
                index += 2
                continue
            depth += {"(": 1, ")": -1}.get(pattern[index], 0)
            index += 1
        found[match.group(1)] = pattern[start : index - 1]
    return found


def route_operations(app: web.Application) -> list[RouteOperation]:
    """Every operation of the route table, a catch-all once per method of ANY_METHODS."""
    operations: list[RouteOperation] = []
    for route in app.router.routes():
        resource = route.resource
        if resource is None:
            continue
        info = resource.get_info()
        path = _PARAM.sub(r"{\1}", info.get("formatter") or info.get("path") or "")
        compiled = info.get("pattern")
        patterns = _group_patterns(compiled.pattern) if compiled is not None else {}
        methods = ANY_METHODS if route.method == "*" else (route.method.lower(),)
        operations.extend(RouteOperation(method, path, route.handler, patterns) for method in methods)
    return operations


def _summary(handler: Any) -> str:
    doc = (getattr(handler, "__doc__", None) or "").strip()
    return doc.splitlines()[0] if doc else f"{handler.__module__}.{handler.__name__}"


def _operation(route: RouteOperation) -> dict[str, Any]:
    method, path, handler = route.method, route.path, route.handler
    service = service_of(path)
    error = {
        "description": "An OpenStack-shaped error",
        "content": {
            "application/json": {"schema": {"$ref": f"#/components/schemas/{_ERROR_OF_SERVICE[service]}"}}
        },
    }
    operation: dict[str, Any] = {
        "operationId": re.sub(r"[^A-Za-z0-9]+", "_", f"{method}{path}").strip("_"),
        "summary": _summary(handler),
        "tags": [
            service
            if path.startswith(("/identity", "/compute", "/image", "/volume", "/networking"))
            else "events"
            if path.startswith("/v1/events")
            else "discovery"
        ],
        "responses": {"default": {"description": "The service's answer"}, "4XX": error},
        "x-handler": f"{handler.__module__}.{handler.__name__}",
    }
    parameters = [
        {"name": name, "in": "path", "required": True, "schema": _path_schema(route, name)}
        for name in _PARAM.findall(path)
    ]
    if path.startswith(("/compute/", "/volume/")):
        parameters.append(
            {
                "name": "OpenStack-API-Version",
                "in": "header",
                "required": False,
                "description": "The microversion, e.g. `compute 2.96` or `volume 3.70`",
                "schema": {"type": "string"},
            }
        )
    # A handler may say which query parameters it takes (the services' list filters, paging, ...).
    parameters.extend(getattr(handler, "query_parameters", ()))
    if parameters:
        operation["parameters"] = parameters
    if getattr(handler, "host_token", False):
        operation["security"] = [{"hostToken": []}]
    elif getattr(handler, "public", False):
        operation["security"] = []
    body = REQUEST_BODIES.get((method, path))
    if body is not None:
        operation["requestBody"] = {"required": True, "content": {"application/json": {"schema": body}}}
    elif (method, path) in _MEDIA_BODIES:
        operation["requestBody"] = {
            "required": True,
            "content": {media: {"schema": schema} for media, schema in _MEDIA_BODIES[(method, path)].items()},
        }
    return operation


def _path_schema(route: RouteOperation, name: str) -> Schema:
    """A path parameter as the router matches it (a value it would not match is another route's)."""
    schema: Schema = {"type": "string", "minLength": 1}
    expression = route.patterns.get(name)
    if expression is not None:
        schema["pattern"] = f"^(?:{expression})$"
    return schema


def build(app: web.Application, base_url: str) -> dict[str, Any]:
    """The OpenAPI document of every route the application has."""
    paths: dict[str, dict[str, Any]] = {}
    for route in route_operations(app):
        paths.setdefault(route.path, {})[route.method] = _operation(route)
    return {
        "openapi": OPENAPI_VERSION,
        "info": {
            "title": "actorstack",
            "version": "1",
            "description": "OpenStack-compatible Identity v3, Compute v2.1, Image v2, Block Storage v3 "
            "and Network v2.0, and the operator event stream.",
        },
        "servers": [{"url": base_url}],
        "security": [{"token": []}],
        "paths": paths,
        "components": {
            "securitySchemes": {
                "token": {
                    "type": "apiKey",
                    "in": "header",
                    "name": "X-Auth-Token",
                    "description": "A Keystone token (POST /identity/v3/auth/tokens)",
                },
                "hostToken": {
                    "type": "apiKey",
                    "in": "header",
                    "name": "X-Host-Token",
                    "description": "A host agent's token (`actorstack host credentials`): /internal/v1 only",
                },
            },
            "schemas": ERROR_SCHEMAS,
        },
    }


@public
async def get_openapi(request: web.Request) -> web.Response:
    """This API's OpenAPI description (no token needed)."""
    cache = request.app[_DOCUMENT]
    if not cache:
        cache.update(build(request.app, request.app[CTX].base_url))
    return json_response(cache)


def setup(app: web.Application) -> None:
    app[_DOCUMENT] = {}
    app.router.add_get("/openapi.json", get_openapi)
