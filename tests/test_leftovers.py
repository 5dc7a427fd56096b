"""The suite's end-of-run check finds what a run leaves in the kernel (and only that)."""

from __future__ import annotations

import os
import uuid

import pytest

from tests.conftest import RUN_PREFIX, host_leftovers


@pytest.mark.skipif(os.geteuid() != 0, reason="creating links needs root")
def test_a_link_tagged_with_the_run_is_reported_until_removed() -> None:
    from pyroute2 import IPRoute

    name = f"brqlo{uuid.uuid4().hex[:8]}"
    tag = f"{RUN_PREFIX}-leftover-check-{uuid.uuid4().hex[:6]}"  # not the run's plain prefix: no cross-talk
    with IPRoute() as ipr:
        ipr.link("add", ifname=name, kind="bridge")
        try:
            index = ipr.link_lookup(ifname=name)[0]
            assert not any(name in item for item in host_leftovers(tag))
            ipr.link("set", index=index, ifalias=f"actorstack:{tag}")
            assert f"link {name}" in host_leftovers(tag)
        finally:
            ipr.link("del", index=ipr.link_lookup(ifname=name)[0])
    assert not any(name in item for item in host_leftovers(tag))
