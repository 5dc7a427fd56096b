"""Links in compute responses, and the paging Nova's lists share (limit, marker, next link).

Nova gives every resource a `self` link under the versioned endpoint and a `bookmark` link under
the unversioned one (…/compute/v2.1/flavors/1 and …/compute/flavors/1); a list whose page is full
carries a `next` link with the marker of its last item.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote, urlencode

from aiohttp import web

from api.compute import query_params
from api.context import ctx

MAX_LIMIT = 1000  # Nova's [api] max_limit


def resource_links(request: web.Request, collection: str, identifier: str) -> list[dict[str, str]]:
    base = ctx(request).base_url
    tail = f"{collection}/{quote(str(identifier), safe='')}"
    return [
        {"rel": "self", "href": f"{base}/compute/v2.1/{tail}"},
        {"rel": "bookmark", "href": f"{base}/compute/{tail}"},
    ]


def limit(request: web.Request) -> int:
    """The page size: ?limit= capped at MAX_LIMIT; absent or 0 means MAX_LIMIT."""
    return min(query_params.integer(request, "limit") or MAX_LIMIT, MAX_LIMIT)


def next_links(
    request: web.Request, collection: str, count: int, last_id: str | None
) -> list[dict[str, str]]:
    """[{"rel": "next", …}] when this page is as long as a page can be, else []."""
    if last_id is None or count != limit(request):
        return []
    params: dict[str, Any] = dict(sorted(request.query.items()))
    params["marker"] = last_id
    href = f"{ctx(request).base_url}/compute/v2.1/{collection}?{urlencode(params)}"
    return [{"rel": "next", "href": href}]
