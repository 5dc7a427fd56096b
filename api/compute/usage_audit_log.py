"""/compute/v2.1/os-instance_usage_audit_log: Nova's instance usage audit (admin only).

Nova's compute hosts can audit the instances' usage once per period (a month) when its
`instance_usage_audit` is on, and log each host's run; this API reports, for the last completed
period before now (or before a given time), which hosts ran the audit, how many instances and
errors they counted, and which did not run it. This cloud's hosts do not run that audit (Nova's
default too), so every host is reported as not run, with no instance counted: what an operator
would see of a Nova whose audit is off.
"""

from __future__ import annotations

import datetime
from typing import Any

from aiohttp import web

from api.compute import hosts
from api.context import caller, ctx, json_response
from api.errors import BadRequest


def last_completed_month(before: datetime.datetime) -> tuple[datetime.datetime, datetime.datetime]:
    """Nova's last_completed_audit_period for a monthly period: the month before `before`'s."""
    end = before.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    begin = (end - datetime.timedelta(days=1)).replace(day=1)
    return begin, end


async def _report(request: web.Request, before: datetime.datetime) -> dict[str, Any]:
    begin, end = last_completed_month(before)
    async with ctx(request).pool.acquire() as conn:
        names = sorted(r["name"] for r in await hosts.rows(conn))
    return {
        "period_beginning": str(begin),
        "period_ending": str(end),
        "num_hosts": len(names),
        "num_hosts_done": 0,
        "num_hosts_running": 0,
        "num_hosts_not_run": len(names),
        "hosts_not_run": names,
        "total_instances": 0,
        "total_errors": 0,
        "overall_status": f"{'ALL' if not names else f'0 of {len(names)}'} hosts done. 0 errors.",
        "log": {},
    }


async def index(request: web.Request) -> web.Response:
    caller(request).require_admin("os_compute_api:os-instance-usage-audit-log:list")
    now = datetime.datetime.now(datetime.UTC).replace(tzinfo=None)
    return json_response({"instance_usage_audit_logs": await _report(request, now)})


async def show(request: web.Request) -> web.Response:
    """The period completed before the given time ('YYYY-MM-DD HH:MM:SS[.ffffff]')."""
    caller(request).require_admin("os_compute_api:os-instance-usage-audit-log:show")
    raw = request.match_info["before"]
    try:
        before = datetime.datetime.strptime(
            raw, "%Y-%m-%d %H:%M:%S.%f" if "." in raw else "%Y-%m-%d %H:%M:%S"
        )
    except ValueError:
        raise BadRequest(f"Invalid timestamp for date {raw}") from None
    return json_response({"instance_usage_audit_log": await _report(request, before)})


def setup(app: web.Application) -> None:
    r = app.router
    r.add_get("/compute/v2.1/os-instance_usage_audit_log", index)
    r.add_get("/compute/v2.1/os-instance_usage_audit_log/{before}", show)
