"""The OpenStack-compatible HTTP API (aiohttp). Built by the API gateway issue; the API talks
to actors only through `protocol` messages written to the outbox."""
