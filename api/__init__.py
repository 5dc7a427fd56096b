"""The OpenStack-compatible HTTP API (aiohttp). Built by the API gateway issue; the API talks
to actors only through `protocol` messages written to the outbox.

The API describes itself: `GET /openapi.json` (no token needed) is an OpenAPI 3.1 document of
every route it serves, built from the route table (api/openapi.py), with the X-Auth-Token
security scheme and the JSON Schemas of the main request bodies."""
