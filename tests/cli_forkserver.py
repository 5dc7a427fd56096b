"""The real `openstack` CLI, without paying its start-up on every call.

`openstack` spends most of a call importing itself (openstackclient, openstacksdk, keystoneauth,
cliff, the plugins' entry points): 1.7 s per call on the 2-core CI machine, hundreds of calls in
the suite. A fork server imports it once; each call is a fork of that warm process, which then
runs exactly what the console script runs (`openstackclient.shell.main(argv)`), with the call's
environment, working directory, stdin from /dev/null and file descriptors 1 and 2 on files of its
own. So the code under test is the CLI itself, parsing, authenticating and talking HTTP per call as
from a shell; only the imports are shared. Calls may run in parallel (one child each).

Protocol, over a UNIX socket, one connection per call: the client sends one JSON object
{"argv", "env", "cwd"} and shuts its side down; the child answers {"pid"} first (so that a client
that times out can kill it), then {"returncode", "stdout", "stderr"}, one JSON object per line.

`ACTORSTACK_TEST_CLI=subprocess` makes the tests run the `openstack` executable instead."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

WARM_MODULES = (
    "openstackclient.shell",
    "openstack.connection",
    "openstackclient.compute.v2.server",
    "openstackclient.compute.v2.flavor",
    "openstackclient.network.v2.network",
    "openstackclient.network.v2.port",
    "openstackclient.network.v2.subnet",
    "openstackclient.volume.v3.volume",
    "openstackclient.image.v2.image",
    "openstackclient.identity.v3.project",
    "openstackclient.identity.v3.user",
)


def _serve(path: str) -> None:
    """The server process: import the CLI, then fork a child per connection."""
    import importlib

    parent = os.getppid()
    for name in WARM_MODULES:
        try:
            importlib.import_module(name)
        except ImportError:  # a module moved in another release: the child imports what it needs
            pass
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # children are reaped by the kernel
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path)
    listener.listen(64)
    listener.settimeout(2.0)
    print("ready", flush=True)
    while os.getppid() == parent:  # the tests are gone (even killed with -9): so is the server
        try:
            conn, _ = listener.accept()
        except TimeoutError:
            continue
        conn.settimeout(None)
        if os.fork() == 0:
            listener.close()
            signal.signal(signal.SIGCHLD, signal.SIG_DFL)
            try:
                _child(conn)
            finally:
                os._exit(0)
        conn.close()


def _child(conn: socket.socket) -> None:
    with conn.makefile("rb") as reader:
        request = json.loads(reader.read())
    conn.sendall(json.dumps({"pid": os.getpid()}).encode() + b"\n")
    os.environ.clear()
    os.environ.update(request["env"])
    os.chdir(request["cwd"])
    out, err = tempfile.TemporaryFile(), tempfile.TemporaryFile()
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.dup2(out.fileno(), 1)
    os.dup2(err.fileno(), 2)
    sys.argv = ["openstack", *request["argv"]]
    try:
        from openstackclient.shell import main

        returncode = main(request["argv"])
    except SystemExit as exc:
        returncode = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except BaseException as exc:  # what the console script would print as a traceback
        import traceback

        traceback.print_exc()
        returncode = 1 if not isinstance(exc, KeyboardInterrupt) else 130
    sys.stdout.flush()
    sys.stderr.flush()
    out.seek(0)
    err.seek(0)
    reply = {
        "returncode": int(returncode or 0),
        "stdout": out.read().decode(errors="replace"),
        "stderr": err.read().decode(errors="replace"),
    }
    conn.sendall(json.dumps(reply).encode() + b"\n")
    conn.close()


class ForkServer:
    """The client side: starts the server lazily and runs calls through it."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._proc: subprocess.Popen[bytes] | None = None
        self._dir = tempfile.mkdtemp(prefix="astest-cli-")
        self._path = str(Path(self._dir) / "cli.sock")

    def _ensure(self) -> None:
        with self._lock:
            if self._proc is not None and self._proc.poll() is None:
                return
            if os.path.exists(self._path):
                os.unlink(self._path)
            self._proc = subprocess.Popen(
                [sys.executable, __file__, self._path], stdout=subprocess.PIPE, stdin=subprocess.DEVNULL
            )
            assert self._proc.stdout is not None
            line = self._proc.stdout.readline()
            if line.strip() != b"ready":
                raise RuntimeError(f"the openstack CLI fork server did not start (it said {line!r})")

    def run(self, argv: list[str], env: dict[str, str], timeout: float) -> subprocess.CompletedProcess[str]:
        """Like subprocess.run([openstack, *argv], env=env, capture_output=True, text=True, timeout=…)."""
        self._ensure()
        deadline = time.monotonic() + timeout
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
            conn.settimeout(timeout)
            conn.connect(self._path)
            conn.sendall(json.dumps({"argv": argv, "env": env, "cwd": os.getcwd()}).encode())
            conn.shutdown(socket.SHUT_WR)
            reader = conn.makefile("rb")
            pid = json.loads(reader.readline())["pid"]
            try:
                conn.settimeout(max(0.1, deadline - time.monotonic()))
                line = reader.readline()
            except TimeoutError:
                _kill(pid)
                raise subprocess.TimeoutExpired(["openstack", *argv], timeout) from None
            if not line:
                raise RuntimeError(
                    f"openstack {' '.join(argv)}: the CLI process (pid {pid}) died without an answer"
                )
            reply: dict[str, Any] = json.loads(line)
        return subprocess.CompletedProcess(
            ["openstack", *argv], reply["returncode"], reply["stdout"], reply["stderr"]
        )

    def close(self) -> None:
        with self._lock:
            if self._proc is not None and self._proc.poll() is None:
                self._proc.terminate()
                try:
                    self._proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    self._proc.kill()
                    self._proc.wait()
            self._proc = None
        for name in (self._path,):
            if os.path.exists(name):
                os.unlink(name)
        if os.path.isdir(self._dir):
            os.rmdir(self._dir)


def _kill(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


if __name__ == "__main__":
    _serve(sys.argv[1])
