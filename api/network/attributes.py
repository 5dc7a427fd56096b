"""Request bodies as Neutron's API layer checks them: `{"network": {...}}`, every attribute known
and allowed for the method, each converted and validated before anything is written.

A resource declares its attributes as a dict of name -> `Attr` (a converter and whether POST
and PUT may carry it); `parse` refuses unknown attributes ("Unrecognized attribute(s)") and
attributes the method may not set, and returns the converted values. Converters take the
attribute's name (for the message) and the value, and raise Neutron's 400.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import re
import uuid
from collections.abc import Callable
from typing import Any

from api.network.faults import bad_attribute, bad_request

Converter = Callable[[str, Any], Any]
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclasses.dataclass(frozen=True)
class Attr:
    convert: Converter
    post: bool = True
    put: bool = True


def read_only(*names: str) -> dict[str, Attr]:
    """Attributes a resource shows but no request may set ("Attribute 'x' not allowed in POST")."""
    return {name: Attr(lambda name, value: value, post=False, put=False) for name in names}


STANDARD_READ_ONLY = ("id", "created_at", "updated_at", "revision_number")


def resource_body(document: Any, resource: str) -> dict[str, Any]:
    """The `{resource: {...}}` object of a request body."""
    if not isinstance(document, dict) or resource not in document:
        raise bad_request(f"Unable to find '{resource}' in request body")
    body = document[resource]
    if not isinstance(body, dict):
        raise bad_request(f"Invalid input for {resource}. Reason: '{body}' is not a dictionary.")
    return body


def create_bodies(document: Any, resource: str) -> tuple[list[dict[str, Any]], bool]:
    """The resources a POST creates, and whether it is a bulk create: `{"network": {...}}` is
    one, `{"networks": [{...}, {"network": {...}}, ...]}` several (Neutron's
    prepare_request_body: each item bare or wrapped), all created or none."""
    collection = resource + "s"
    if not isinstance(document, dict):
        raise bad_request("Body contains invalid data")
    if collection not in document:
        return [resource_body(document, resource)], False
    items = document[collection]
    if not isinstance(items, list):
        raise bad_request("Body contains invalid data")
    if not items:
        raise bad_request("Resources required")
    bodies = []
    for item in items:
        if not isinstance(item, dict):
            raise bad_request("Body contains invalid data")
        body = item[resource] if resource in item else item
        if not isinstance(body, dict):
            raise bad_request(f"Object '{resource}' contains invalid data")
        bodies.append(body)
    return bodies, True


def parse(body: dict[str, Any], spec: dict[str, Attr], *, method: str) -> dict[str, Any]:
    unknown = sorted(set(body) - set(spec))
    if unknown:
        raise bad_request(f"Unrecognized attribute(s) '{', '.join(unknown)}'")
    for name in body:
        if not (spec[name].post if method == "POST" else spec[name].put):
            raise bad_request(f"Attribute '{name}' not allowed in {method}")
    return {name: spec[name].convert(name, value) for name, value in body.items()}


def owner_project(values: dict[str, Any], default: str) -> str:
    """The project a new resource belongs to: `project_id`/`tenant_id` (they must agree), or
    the caller's."""
    given = {values[k] for k in ("project_id", "tenant_id") if values.get(k) is not None}
    if len(given) > 1:
        raise bad_request("Both project_id and tenant_id were given, with different values")
    return given.pop() if given else default


# --- converters ------------------------------------------------------------------------------


def string(max_len: int = 255) -> Converter:
    def convert(name: str, value: Any) -> str:
        if not isinstance(value, str):
            raise bad_attribute(name, f"'{value}' is not a valid string")
        if len(value) > max_len:
            raise bad_attribute(name, f"'{value}' exceeds maximum length of {max_len}")
        return value

    return convert


def nullable_string(max_len: int = 255) -> Converter:
    inner = string(max_len)

    def convert(name: str, value: Any) -> str:
        return "" if value is None else inner(name, value)

    return convert


def boolean(name: str, value: Any) -> bool:
    """Neutron's convert_to_boolean: true/false, 1/0, and their strings in any case."""
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.lower() in ("true", "false", "1", "0"):
        return value.lower() in ("true", "1")
    raise bad_attribute(name, f"'{value}' cannot be converted to boolean")


def integer(low: int, high: int) -> Converter:
    def convert(name: str, value: Any) -> int:
        if isinstance(value, bool):
            raise bad_attribute(name, f"'{value}' is not an integer")
        try:
            number = int(value)
        except (TypeError, ValueError):
            raise bad_attribute(name, f"'{value}' is not an integer") from None
        if number < low:
            raise bad_attribute(name, f"'{number}' is too small - must be at least '{low}'")
        if number > high:
            raise bad_attribute(name, f"'{number}' is too large - must be no larger than '{high}'")
        return number

    return convert


def uuid_string(name: str, value: Any) -> str:
    if not isinstance(value, str):
        raise bad_attribute(name, f"'{value}' is not a valid UUID")
    try:
        uuid.UUID(value)
    except ValueError:
        raise bad_attribute(name, f"'{value}' is not a valid UUID") from None
    return value


def string_list(max_len: int = 255, *, max_items: int | None = None, unique: bool = False) -> Converter:
    item = string(max_len)

    def convert(name: str, value: Any) -> list[str]:
        if not isinstance(value, list):
            raise bad_attribute(name, f"'{value}' is not a list")
        items = [item(name, v) for v in value]
        if unique and len(set(items)) != len(items):
            raise bad_attribute(name, f"Duplicate items in the list: '{', '.join(items)}'")
        if max_items is not None and len(items) > max_items:
            raise bad_attribute(name, f"'{value}' has more than {max_items} items")
        return items

    return convert


def tags(name: str, value: Any) -> list[str]:
    """Neutron's tags: strings of 1-255 characters without a comma (filters split on commas)."""
    items = string_list(255)(name, value)
    for tag in items:
        if not tag or "," in tag:
            raise bad_attribute(name, f"'{tag}' is not a valid tag")
    return list(dict.fromkeys(items))


def ip_address(name: str, value: Any) -> IPAddress:
    if not isinstance(value, str):
        raise bad_attribute(name, f"'{value}' is not a valid IP address")
    try:
        return ipaddress.ip_address(value)
    except ValueError:
        raise bad_attribute(name, f"'{value}' is not a valid IP address") from None


def ip_subnet(name: str, value: Any) -> IPNetwork:
    """A CIDR, host bits cleared as Neutron does ("10.0.0.5/24" is 10.0.0.0/24); a bare
    address is refused, Neutron's "is not a recognized IP subnet cidr"."""
    if not isinstance(value, str) or value.strip() != value:
        raise bad_attribute(name, f"'{value}' is not a valid IP subnet")
    try:
        network = ipaddress.ip_network(value, strict=False)
    except ValueError:
        raise bad_attribute(name, f"'{value}' is not a valid IP subnet") from None
    if "/" not in value:
        raise bad_attribute(name, f"'{value}' isn't a recognized IP subnet cidr, '{network}' is recommended")
    return network


_MAC = re.compile(r"^([0-9a-fA-F]{2})([:-])([0-9a-fA-F]{2})(\2[0-9a-fA-F]{2}){4}$")


def mac_address(name: str, value: Any) -> str:
    """A unicast-usable MAC, as Neutron stores it: lower case, colons."""
    if not isinstance(value, str) or not _MAC.match(value):
        raise bad_attribute(name, f"'{value}' is not a valid MAC address")
    mac = value.lower().replace("-", ":")
    if mac in ("00:00:00:00:00:00", "ff:ff:ff:ff:ff:ff"):
        raise bad_attribute(name, f"'{value}' is not a valid MAC address")
    return mac


_DNS_LABEL = re.compile(r"^(?!-)[a-z0-9-]{1,63}(?<!-)$", re.IGNORECASE)


def dns_name(name: str, value: Any) -> str:
    """A host name (or an FQDN), each label 1-63 letters, digits and hyphens; "" unsets it."""
    text = string(255)(name, "" if value is None else value)
    if text and not all(_DNS_LABEL.match(label) for label in text.rstrip(".").split(".")):
        raise bad_attribute(name, f"'{text}' not a valid PQDN or FQDN")
    return text


def dns_domain(name: str, value: Any) -> str:
    """A domain name; Neutron keeps it with its trailing dot."""
    text = dns_name(name, value)
    return text if not text or text.endswith(".") else text + "."


def empty_list_only(what: str) -> Converter:
    """An attribute shown for compatibility whose feature this cloud does not have: [] (or
    null) is accepted, anything else refused with the reason."""

    def convert(name: str, value: Any) -> list[Any]:
        if value is None or value == []:
            return []
        raise bad_attribute(name, f"{what} are not available in this cloud")

    return convert


def null_only(what: str) -> Converter:
    def convert(name: str, value: Any) -> None:
        if value is not None:
            raise bad_attribute(name, f"{what} are not available in this cloud")

    return convert
