"""Neutron's errors as its clients see them: the NeutronError "type" (Neutron's exception class)
and its message, word for word where clients or people match on them.

These are the ordinary `api.errors` classes with a `kind`; outside /networking (the compute API
calling `api.network.ports`) they render in that service's own shape.
"""

from __future__ import annotations

from api.errors import BadRequest, Conflict, Forbidden, NotFound


def network_not_found(network_id: str) -> NotFound:
    return NotFound(f"Network {network_id} could not be found.", kind="NetworkNotFound")


def subnet_not_found(subnet_id: str) -> NotFound:
    return NotFound(f"Subnet {subnet_id} could not be found.", kind="SubnetNotFound")


def port_not_found(port_id: str) -> NotFound:
    return NotFound(f"Port {port_id} could not be found.", kind="PortNotFound")


def bad_request(message: str) -> BadRequest:
    """What Neutron's API layer answers for a malformed body or attribute (webob's 400)."""
    return BadRequest(message, kind="HTTPBadRequest")


def bad_attribute(name: str, reason: str) -> BadRequest:
    return bad_request(f"Invalid input for {name}. Reason: {reason}.")


def invalid_input(reason: str) -> BadRequest:
    return BadRequest(f"Invalid input for operation: {reason}.", kind="InvalidInput")


def policy_denied(rule: str) -> Forbidden:
    """oslo.policy's refusal; `rule` as Neutron prints it, e.g. "rule:update_network"."""
    return Forbidden(f"{rule} is disallowed by policy", kind="PolicyNotAuthorized")


def over_quota(resource: str) -> Conflict:
    return Conflict(f"Quota exceeded for resources: ['{resource}'].", kind="OverQuota")


def network_in_use(network_id: str) -> Conflict:
    return Conflict(
        f"Unable to complete operation on network {network_id}. There are one or more ports still "
        f"in use on the network.",
        kind="NetworkInUse",
    )


def subnet_in_use(subnet_id: str) -> Conflict:
    return Conflict(
        f"Unable to complete operation on subnet {subnet_id}: One or more ports have an IP "
        f"allocation from this subnet.",
        kind="SubnetInUse",
    )


def addresses_exhausted(network_id: str) -> Conflict:
    return Conflict(
        f"No more IP addresses available on network {network_id}.", kind="IpAddressGenerationFailure"
    )


def address_taken(ip_address: str, subnet_id: str) -> Conflict:
    return Conflict(
        f"IP address {ip_address} already allocated in subnet {subnet_id}", kind="IpAddressAlreadyAllocated"
    )


def invalid_ip_for_subnet(ip_address: str) -> BadRequest:
    return BadRequest(
        f"IP address {ip_address} is not a valid IP for the specified subnet.", kind="InvalidIpForSubnet"
    )


def invalid_ip_for_network(ip_address: str) -> BadRequest:
    return BadRequest(
        f"IP address {ip_address} is not a valid IP for any of the subnets on the specified network.",
        kind="InvalidIpForNetwork",
    )


def mac_in_use(network_id: str, mac: str) -> Conflict:
    return Conflict(
        f"Unable to complete operation for network {network_id}. The mac address {mac} is in use.",
        kind="MacAddressInUse",
    )
