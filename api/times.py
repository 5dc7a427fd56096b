"""The two timestamp formats OpenStack's APIs use, from a datetime or epoch seconds (UTC)."""

from __future__ import annotations

import datetime

Moment = datetime.datetime | float


def _utc(moment: Moment) -> datetime.datetime:
    if isinstance(moment, (int, float)):
        return datetime.datetime.fromtimestamp(moment, datetime.UTC)
    return moment.astimezone(datetime.UTC)


def iso_seconds(moment: Moment) -> str:
    """Whole seconds with a Z: Nova's created/updated, Glance's timestamps."""
    return _utc(moment).strftime("%Y-%m-%dT%H:%M:%SZ")


def iso_micro(moment: Moment) -> str:
    """Microseconds, no zone suffix: Nova's launched_at, keypairs, services (Keystone adds a Z)."""
    return _utc(moment).strftime("%Y-%m-%dT%H:%M:%S.%f")
