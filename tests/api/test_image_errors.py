"""Glance's errors take the type the client accepts, as webob's error pages do: JSON for
application/json (tempest), HTML for */* (python-glanceclient and openstacksdk read the
message out of the page), plain text when the request accepts neither (no Accept header)."""

from __future__ import annotations

import asyncio
import re
import uuid

import aiohttp
import openstack
import pytest

from api.errors import webob_media_type
from tests.api.conftest import Cloud


@pytest.mark.parametrize(
    ("accept", "media"),
    [
        ("*/*", "text/html"),
        ("application/json", "application/json"),
        ("text/html;q=0.5, application/json", "application/json"),
        ("application/*", "application/json"),
        ("text/*;q=0.9, */*;q=0.1", "text/html"),
        ("application/json;q=0, */*", "text/html"),
        ("image/png", "text/plain"),
        ("", "text/plain"),
        ("no slash here", "text/html"),  # an invalid header accepts every offer
    ],
)
def test_the_accept_header_picks_webobs_page(accept: str, media: str) -> None:
    assert webob_media_type(accept) == media


def glanceclient_details(page: str) -> str:
    """What python-glanceclient's exc.from_response makes of an HTML error page."""
    lines = [re.sub(r"<.+?>", "", line.strip()) for line in page.splitlines()]
    seen: list[str] = []
    for line in lines:
        if line and line not in seen:
            seen.append(line)
    return ": ".join(seen)


async def raw_get(cloud: Cloud, path: str, headers: dict[str, str]) -> tuple[int, str, str]:
    token = await cloud.token()
    async with (
        aiohttp.ClientSession(skip_auto_headers=["Accept"]) as session,
        session.get(cloud.url + path, headers={"X-Auth-Token": token, **headers}) as r,
    ):
        return r.status, r.headers["Content-Type"], await r.text()


async def test_a_missing_image_in_each_type(cloud: Cloud) -> None:
    missing = str(uuid.uuid4())
    path = f"/image/v2/images/{missing}"
    message = f"No image found with ID {missing}"
    status, media, text = await raw_get(cloud, path, {"Accept": "*/*"})
    assert status == 404 and media.startswith("text/html"), (media, text)
    assert glanceclient_details(text) == f"404 Not Found: {message}"
    status, media, text = await raw_get(cloud, path, {"Accept": "application/json"})
    assert status == 404 and media.startswith("application/json")
    assert text == f'{{"message": "{message}", "code": "404 Not Found", "title": "Not Found"}}'
    status, media, text = await raw_get(cloud, path, {})
    assert status == 404 and media.startswith("text/plain")
    assert text.startswith(f"404 Not Found\n\n{message}\n")
    # A message is escaped in the page, and other services keep their JSON whatever is accepted.
    status, media, text = await raw_get(cloud, "/image/v2/images?visibility=<b>", {"Accept": "*/*"})
    assert status == 400 and "Invalid visibility value: &lt;b&gt;" in text
    status, media, _ = await raw_get(cloud, "/compute/v2.1/servers/nope", {"Accept": "*/*"})
    assert status == 404 and media.startswith("application/json")


async def test_the_clients_show_glances_message(cloud: Cloud) -> None:
    missing = str(uuid.uuid4())
    err = await asyncio.to_thread(cloud.openstack_fails, "image", "show", missing)
    assert "No Image found for" in err.stderr and "Traceback" not in err.stderr, err.stderr

    def sdk_get() -> str:
        conn = openstack.connect(
            auth_url=f"{cloud.url}/identity/v3",
            username=cloud.admin.user,
            password=cloud.admin.password,
            project_name=cloud.admin.project,
            user_domain_name="Default",
            project_domain_name="Default",
            region_name="RegionOne",
        )
        try:
            conn.image.get_image(missing)
        except openstack.exceptions.NotFoundException as exc:
            return str(exc.details)
        finally:
            conn.close()
        return ""

    # openstacksdk asks for any type here and reads the HTML page, as it does from Glance.
    assert await asyncio.to_thread(sdk_get) == f"404 Not Found: No image found with ID {missing}"
