"""`tools/tempest`: OpenStack's own API tests (tempest) against a private cloud of this checkout.

1. Installs tempest (TEMPEST_VERSION) into a virtual environment of its own, `.venv-tempest`
   (once; again when the version changes).
2. Starts a private cloud with `actorstack/scratch.py`: its own database, vhost, state
   directory and port; `actorstack up --hosts 3 --virt test --network none` (no host
   networking: tempest's API tests do not reach guests, `run_validation` is off).
3. Prepares what tempest expects to find: two 1 MiB raw images and a shared network
   `tempest-shared` with a subnet.
4. Writes `etc/tempest.conf` from `tools/tempest.conf.template` and what the cloud advertises:
   the compute and volume microversion ranges, the Neutron extensions, the block-storage
   catalog type.
5. Runs each group's regex (GROUPS) with `tempest run --concurrency N`, reads the results
   (`stestr last --subunit`) and prints a table per group: listed, passed, failed, skipped, not
   run (their class's setUpClass failed), and fixture errors; then every failure with its key
   line.
6. Exits 1 if a test or a class fixture failed that `tools/tempest-known-failures.txt` does not
   list (each entry there says why), 0 otherwise. Entries that no longer fail are named, so the
   list shrinks as the cloud grows.

Everything it started is stopped and removed at the end, also on failure or Ctrl-C; `--keep DIR`
keeps the tempest workspace (config, logs, stestr repository) in DIR.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import os
import re
import secrets
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from actorstack.scratch import ScratchCloud, ScratchServices  # noqa: E402

TEMPEST_VERSION = "47.0.0"
VENV = ROOT / ".venv-tempest"
TEMPLATE = ROOT / "tools" / "tempest.conf.template"
KNOWN = ROOT / "tools" / "tempest-known-failures.txt"

# What each group runs (the five API groups of the interoperability guidelines' core). As later
# issues land, their tests join these regexes and their feature flags are switched on.
GROUPS: dict[str, tuple[str, float]] = {
    "identity": (r"^tempest\.api\.identity\.(v3|admin\.v3)", 900),
    "compute": (
        r"^tempest\.api\.compute\.(servers|flavors|keypairs|limits|quotas|server_groups|security_groups|"
        r"admin\.test_(flavors|quotas|hypervisor|services|availability_zone|aggregates|simple_tenant_usage|"
        r"instance_usage_audit_log|security_groups)|test_versions)",
        1500,
    ),
    "image": (r"^tempest\.api\.image\.v2", 900),
    "network": (
        r"^tempest\.api\.network\.(test_networks|test_ports|admin\.test_quotas|test_extensions)",
        900,
    ),
    "volume": (
        r"^tempest\.api\.volume\.(test_volumes|test_volume|admin\.test_volume_quotas|test_versions)",
        1200,
    ),
}
FIXTURE = re.compile(r"^(setUpClass|tearDownClass) \((?P<cls>[\w.]+)\)$")
ATTRS = re.compile(r"\[.*\]$")

# Reads a subunit v2 stream on stdin (in the tempest venv) and prints one JSON line per result.
_SUBUNIT_TO_JSON = r"""
import json, sys
import subunit, testtools

def emit(test):
    details = test.get("details") or {}
    text = ""
    for name in ("traceback", "reason"):
        if name in details:
            text = details[name].as_text()
            break
    print(json.dumps({"id": test["id"], "status": test["status"], "text": text[-4000:]}))

stream = subunit.ByteStreamToStreamResult(sys.stdin.buffer, non_subunit_name="stdout")
result = testtools.StreamToDict(emit)
result.startTestRun()
stream.run(result)
result.stopTestRun()
"""


class TempestError(Exception):
    pass


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# --- tempest's own environment -----------------------------------------------------------------------


def ensure_tempest() -> Path:
    """The tempest venv's bin directory, installing tempest there first when needed."""
    stamp = VENV / ".installed"
    if stamp.exists() and stamp.read_text().strip() == TEMPEST_VERSION:
        return VENV / "bin"
    log(f"installing tempest {TEMPEST_VERSION} into {VENV}")
    shutil.rmtree(VENV, ignore_errors=True)
    subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
    pip = [str(VENV / "bin" / "python"), "-m", "pip", "install", "-q", "--disable-pip-version-check"]
    for args in (["--upgrade", "pip"], [f"tempest=={TEMPEST_VERSION}"]):
        done = subprocess.run([*pip, *args], capture_output=True, text=True)
        if done.returncode != 0:
            raise TempestError(f"pip install {' '.join(args)} failed:\n{done.stdout}{done.stderr}")
    stamp.write_text(TEMPEST_VERSION)
    return VENV / "bin"


# --- the cloud ----------------------------------------------------------------------------------------


@dataclasses.dataclass
class Discovered:
    compute_range: tuple[str, str]
    volume_range: tuple[str, str]
    network_extensions: list[str]
    volume_catalog_type: str
    volume_backends: list[str]
    images: tuple[str, str]


async def _call(
    session: aiohttp.ClientSession, method: str, url: str, token: str, **kwargs: Any
) -> tuple[int, Any]:
    headers = {"X-Auth-Token": token, **kwargs.pop("headers", {})}
    async with session.request(method, url, headers=headers, **kwargs) as r:
        body = await r.json(content_type=None) if r.status != 204 else None
        if r.status >= 400:
            raise TempestError(f"{method} {url}: {r.status} {body}")
        return r.status, body


async def _version_range(session: aiohttp.ClientSession, url: str) -> tuple[str, str]:
    async with session.get(url) as r:
        body = await r.json(content_type=None)
    version = body.get("version") or max(body["versions"], key=lambda v: v.get("id", ""))
    return version.get("min_version") or "", version.get("version") or ""


async def prepare(cloud: ScratchCloud) -> Discovered:
    """The images and the shared network tempest expects, and what the cloud advertises."""
    base = cloud.url
    async with aiohttp.ClientSession() as session:
        token, project = await cloud.admin_token(session)
        images = []
        for name in ("tempest-image", "tempest-image-alt"):
            body = {"name": name, "disk_format": "raw", "container_format": "bare", "visibility": "public"}
            _, image = await _call(session, "POST", f"{base}/image/v2/images", token, json=body)
            await _call(
                session,
                "PUT",
                f"{base}/image/v2/images/{image['id']}/file",
                token,
                data=b"\0" * (1024 * 1024),
                headers={"Content-Type": "application/octet-stream"},
            )
            images.append(image["id"])
        net = {"network": {"name": "tempest-shared", "shared": True}}
        _, network = await _call(session, "POST", f"{base}/networking/v2.0/networks", token, json=net)
        subnet = {
            "subnet": {
                "network_id": network["network"]["id"],
                "cidr": "10.99.0.0/24",
                "ip_version": 4,
                "name": "tempest-shared",
            }
        }
        await _call(session, "POST", f"{base}/networking/v2.0/subnets", token, json=subnet)
        _, extensions = await _call(session, "GET", f"{base}/networking/v2.0/extensions", token)
        async with session.get(f"{base}/identity/v3/auth/catalog", headers={"X-Auth-Token": token}) as r:
            catalog = (await r.json())["catalog"]
        compute = await _version_range(session, f"{base}/compute/v2.1")
        volume = await _version_range(session, f"{base}/volume/v3")
        pools_url = f"{base}/volume/v3/{project}/scheduler-stats/get_pools?detail=true"
        _, pools = await _call(session, "GET", pools_url, token)
    types = {entry["type"] for entry in catalog}
    return Discovered(
        compute_range=compute,
        volume_range=volume,
        network_extensions=sorted(e["alias"] for e in extensions["extensions"]),
        volume_catalog_type="block-storage" if "block-storage" in types else "volumev3",
        volume_backends=sorted(p["capabilities"]["volume_backend_name"] for p in pools["pools"]),
        images=(images[0], images[1]),
    )


def write_config(workspace: Path, cloud: ScratchCloud, found: Discovered) -> Path:
    values = {
        "WORKSPACE": str(workspace),
        "PORT": str(cloud.port),
        "ADMIN_PASSWORD": cloud.password,
        "IMAGE_REF": found.images[0],
        "IMAGE_REF_ALT": found.images[1],
        "COMPUTE_MIN": found.compute_range[0],
        "COMPUTE_MAX": found.compute_range[1],
        "VOLUME_MIN": found.volume_range[0],
        "VOLUME_MAX": found.volume_range[1],
        "NETWORK_EXTENSIONS": ",".join(found.network_extensions),
        "VOLUME_CATALOG_TYPE": found.volume_catalog_type,
        "VOLUME_BACKENDS": ",".join(found.volume_backends),
    }
    text = TEMPLATE.read_text()
    for key, value in values.items():
        text = text.replace(f"@{key}@", value)
    left = re.findall(r"@[A-Z_]+@", text)
    if left:
        raise TempestError(f"{TEMPLATE} has placeholders nobody fills: {sorted(set(left))}")
    path = workspace / "etc" / "tempest.conf"
    path.write_text(text)
    return path


# --- running the groups ---------------------------------------------------------------------------------


@dataclasses.dataclass
class GroupResult:
    name: str
    listed: list[str]
    results: dict[str, tuple[str, str]]  # test or fixture id (attributes stripped) -> (status, text)
    wall: float
    timed_out: bool = False

    def status_of(self, test: str) -> str:
        """The test's own result; for a test with none, its class's: `skip` when the class was
        skipped as a whole (a feature turned off), `not run` when its setUpClass failed."""
        if test in self.results:
            return self.results[test][0]
        cls = test.rsplit(".", 1)[0]
        fixture = self.results.get(f"setUpClass ({cls})", ("",))[0]
        return "skip" if fixture == "skip" else "not run"

    def count(self, status: str) -> int:
        return sum(1 for test in self.listed if self.status_of(test) == status)

    @property
    def not_run(self) -> int:
        return self.count("not run")

    @property
    def fixture_failures(self) -> list[str]:
        return [t for t, (status, _) in self.results.items() if FIXTURE.match(t) and status == "fail"]

    @property
    def failures(self) -> list[str]:
        return sorted(t for t, (status, _) in self.results.items() if status in ("fail", "uxsuccess"))


def _strip(test_id: str) -> str:
    return ATTRS.sub("", test_id)


def _run(bin_dir: Path, args: list[str], cwd: Path, timeout: float) -> subprocess.CompletedProcess[bytes]:
    """A command of the tempest venv in `cwd`, its output captured (raises on timeout)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("OS_")}
    env["PATH"] = f"{bin_dir}:{env.get('PATH', '')}"
    return subprocess.run(args, cwd=cwd, env=env, capture_output=True, timeout=timeout)


def run_group(
    bin_dir: Path, workspace: Path, name: str, regex: str, cap: float, concurrency: int
) -> GroupResult:
    listing = _run(
        bin_dir, ["tempest", "run", "--list-tests", "--regex", regex], workspace, 300
    ).stdout.decode()
    listed = sorted({_strip(line.strip()) for line in listing.splitlines() if line.startswith("tempest.")})
    log(f"{name}: {len(listed)} tests; running them (concurrency {concurrency}, cap {cap:.0f}s)")
    started, timed_out = time.monotonic(), False
    try:
        _run(bin_dir, ["tempest", "run", "--concurrency", str(concurrency), "--regex", regex], workspace, cap)
    except subprocess.TimeoutExpired:
        timed_out = True
        log(f"{name}: did not finish within {cap:.0f}s; counting what it reported")
    wall = time.monotonic() - started
    stream = _run(bin_dir, ["stestr", "last", "--subunit"], workspace, 300).stdout
    parsed = subprocess.run(
        [str(bin_dir / "python"), "-c", _SUBUNIT_TO_JSON], input=stream, capture_output=True, timeout=300
    )
    results: dict[str, tuple[str, str]] = {}
    for line in parsed.stdout.decode(errors="replace").splitlines():
        record = json.loads(line)
        results[_strip(record["id"])] = (record["status"], record["text"])
    return GroupResult(name, listed, results, wall, timed_out)


# --- known failures -----------------------------------------------------------------------------------


def known_failures() -> list[tuple[re.Pattern[str], str]]:
    """(pattern, reason) per entry: an entry is a regex on the test id (or `setUpClass (…)`),
    the comment lines above it its reason."""
    entries, reason = [], []
    for line in KNOWN.read_text().splitlines():
        if line.startswith("#"):
            reason.append(line.lstrip("# ").rstrip())
        elif line.strip():
            entries.append((re.compile(line.strip()), " ".join(reason)))
        else:
            reason = []
    return entries


def _key_line(text: str) -> str:
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return lines[-1][:300] if lines else ""


def print_table(groups: list[GroupResult]) -> None:
    header = ("group", "listed", "passed", "failed", "skipped", "not run", "fixture errors", "wall")
    rows = [header]
    totals = [0] * 6
    for g in groups:
        counts = [len(g.listed), g.count("success"), g.count("fail"), g.count("skip"), g.not_run]
        counts.append(len(g.fixture_failures))
        totals = [a + b for a, b in zip(totals, counts, strict=True)]
        wall = f"{g.wall:.0f}s" + (" (cap)" if g.timed_out else "")
        rows.append((g.name, *map(str, counts), wall))
    rows.append(("total", *map(str, totals), ""))
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    for r in rows:
        cells = zip(r, widths, strict=True)
        print("  ".join(cell.rjust(w) if i else cell.ljust(w) for i, (cell, w) in enumerate(cells)))


def report(groups: list[GroupResult]) -> int:
    """The table, the known failures, the listed ones that no longer fail, and the failures
    nobody listed (then 1)."""
    known = known_failures()
    print()
    print_table(groups)
    unexpected: list[tuple[GroupResult, str]] = []
    expected: list[str] = []
    matched: set[int] = set()
    for g in groups:
        for test in g.failures:
            hit = next((i for i, (pattern, _) in enumerate(known) if pattern.search(test)), None)
            if hit is None:
                unexpected.append((g, test))
            else:
                expected.append(test)
                matched.add(hit)
        if g.timed_out:
            unexpected.append((g, f"{g.name}: the group ran out of its time"))
    if expected:
        print(f"\nknown failures ({len(expected)}; tools/tempest-known-failures.txt says why):")
        print("\n".join(f"  {test}" for test in expected))
    ran = [test for g in groups for test in g.listed]
    fixed = [  # entries whose tests ran this time (their group, their regex) and passed
        pattern.pattern
        for i, (pattern, _) in enumerate(known)
        if i not in matched and any(pattern.search(test) for test in ran)
    ]
    if fixed:
        print("\nlisted as known failures but none failed (take them off the list):")
        print("\n".join(f"  {pattern}" for pattern in fixed))
    if unexpected:
        print(f"\nFAILED, not known ({len(unexpected)}):")
        for g, test in unexpected:
            print(f"  {test}\n      {_key_line(g.results.get(test, ('', ''))[1])}")
        return 1
    print("\nno failure outside the known ones")
    return 0


# --- main ---------------------------------------------------------------------------------------------


async def run(args: argparse.Namespace) -> int:
    bin_dir = ensure_tempest()
    name = f"astest_tempest_{secrets.token_hex(4)}"
    state = Path("/tmp") / name
    groups = [g.strip() for g in args.groups.split(",") if g.strip()]
    unknown = set(groups) - set(GROUPS)
    if unknown:
        raise TempestError(f"no such group: {sorted(unknown)} (groups: {', '.join(GROUPS)})")
    results: list[GroupResult] = []
    # tempest's web-download tests import from the cloud's own loopback port: allowed for this
    # cloud only (Glance's default filtering allows ports 80 and 443), and only to 127.0.0.1, so
    # its negative tests with invented host names never make the cloud look them up.
    import_filter = {
        "ACTORSTACK_IMAGE_IMPORT_ALLOWED_PORTS": "any",
        "ACTORSTACK_IMAGE_IMPORT_ALLOWED_HOSTS": "127.0.0.1",
    }
    async with ScratchServices(name, state) as services, services.cloud(env=import_filter) as cloud:
        log(f"starting a private cloud at {cloud.url} (database and vhost {name}, state {state})")
        await cloud.up("--hosts", "3", "--virt", "test", "--network", "none", timeout=120)
        found = await prepare(cloud)
        workspace = state / "tempest"
        # A workspace is registered in ~/.tempest/workspace.yaml by name: this run's own name,
        # taken off the register again at the end.
        init = _run(bin_dir, ["tempest", "init", "--name", name, str(workspace)], state, 300)
        if init.returncode != 0:
            raise TempestError(f"tempest init failed: {init.stdout.decode()}{init.stderr.decode()}")
        write_config(workspace, cloud, found)
        log(
            f"tempest.conf: compute {'..'.join(found.compute_range)}, "
            f"volume {'..'.join(found.volume_range)}, {len(found.network_extensions)} network extensions"
        )
        try:
            for group in groups:
                regex, cap = GROUPS[group]
                if args.regex:
                    regex = args.regex
                results.append(run_group(bin_dir, workspace, group, regex, cap, args.concurrency))
                cloud.check_alive()
        finally:
            _run(bin_dir, ["tempest", "workspace", "remove", "--name", name], state, 60)
            if args.keep:
                shutil.copytree(workspace, args.keep, dirs_exist_ok=True)
                log(f"the tempest workspace is kept in {args.keep}")
    return report(results)


def main() -> int:
    parser = argparse.ArgumentParser(prog="tools/tempest", description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--groups", default=",".join(GROUPS), help=f"comma-separated (default: {','.join(GROUPS)})"
    )
    parser.add_argument(
        "--regex", help="run only the tests matching this regex (within each group asked for)"
    )
    parser.add_argument("--concurrency", type=int, default=2)
    parser.add_argument("--keep", type=Path, help="copy the tempest workspace (config, logs, results) here")
    args = parser.parse_args()
    try:
        return asyncio.run(run(args))
    except TempestError as exc:
        print(f"tempest: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
