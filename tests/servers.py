"""Private real servers for tests: started on free loopback ports in temp dirs, stopped by pid.

Never mocks: a test that needs Redis or NATS talks to a real ``redis-server`` or
``nats-server -js`` that it can kill and restart for fault tests. A missing binary fails the run
(``.ci/run`` installs both).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def wait_port(port: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.02)
    raise RuntimeError(f"nothing listens on 127.0.0.1:{port} after {timeout} s")


def stop_process(proc: subprocess.Popen[bytes] | None, sig: signal.Signals) -> None:
    """Send *sig* to *proc* by pid (SIGKILL for a crash) and wait until it is gone."""
    if proc is None or proc.poll() is not None:
        return
    os.kill(proc.pid, sig)
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


@contextlib.contextmanager
def frozen(proc: subprocess.Popen[bytes] | None) -> Iterator[None]:
    """*proc* stopped with SIGSTOP for the block — connected, silent — and only once the
    kernel reports it stopped (a signal is delivered asynchronously: a busy machine lets the
    process answer a request or two after ``kill`` returned)."""
    assert proc is not None
    os.kill(proc.pid, signal.SIGSTOP)
    try:
        deadline = time.monotonic() + 10
        while _state(proc.pid) not in ("T", "t") and time.monotonic() < deadline:
            time.sleep(0.001)
        yield
    finally:
        os.kill(proc.pid, signal.SIGCONT)


def _state(pid: int) -> str:
    with open(f"/proc/{pid}/stat") as stat:
        return stat.read().rpartition(")")[2].split()[0]


class RedisServer:
    """A ``redis-server`` of our own: ``.host``, ``.port``, ``.url``; ``stop()``/``start()``."""

    def __init__(self, directory: Path) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError("redis-server is not installed (run .ci/run, or apt-get install)")
        self.binary = binary
        self.directory = directory
        self.host = "127.0.0.1"
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://{self.host}:{self.port}/0"

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [
                self.binary,
                "--bind", self.host,
                "--port", str(self.port),
                "--dir", str(self.directory),
                "--save", "",
                "--appendonly", "no",
                "--protected-mode", "yes",
                "--logfile", str(self.directory / "redis.log"),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        wait_port(self.port)

    def stop(self, sig: signal.Signals = signal.SIGTERM) -> None:
        """Stop it by pid (SIGKILL for a crash); wait until it is gone."""
        stop_process(self.proc, sig)
        self.proc = None

    def flush(self) -> None:
        """Empty every database (between tests)."""
        with socket.create_connection((self.host, self.port), timeout=5) as sock:
            sock.sendall(b"*1\r\n$8\r\nFLUSHALL\r\n")
            if not sock.recv(64).startswith(b"+OK"):
                raise RuntimeError("FLUSHALL failed")


class NatsServer:
    """A ``nats-server`` with JetStream of our own: ``.url``, ``.monitor_url``; ``stop()`` and
    ``start()`` keep the port and the store directory (a restart keeps the streams).

    With *cluster* (the routes of its peers), it is one node of a JetStream cluster named
    ``megatrio-test``; see :func:`start_nats_cluster`.
    """

    def __init__(
        self,
        directory: Path,
        *,
        name: str = "n1",
        cluster_port: int | None = None,
        routes: tuple[int, ...] = (),
    ) -> None:
        binary = shutil.which("nats-server")
        if binary is None:
            raise RuntimeError("nats-server is not installed (run .ci/run, or apt-get install)")
        self.binary = binary
        self.directory = directory
        self.name = name
        self.host = "127.0.0.1"
        self.port = free_port()
        self.monitor_port = free_port()
        self.cluster_port = cluster_port
        self.routes = routes
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"nats://{self.host}:{self.port}"

    @property
    def monitor_url(self) -> str:
        return f"http://{self.host}:{self.monitor_port}"

    def start(self) -> None:
        store = self.directory / "jetstream"
        store.mkdir(parents=True, exist_ok=True)
        args = [
            self.binary,
            "--addr", self.host,
            "--port", str(self.port),
            "--http_port", str(self.monitor_port),
            "--jetstream",
            "--store_dir", str(store),
            "--server_name", self.name,
            "--log", str(self.directory / "nats.log"),
        ]  # fmt: skip
        if self.cluster_port is not None:
            args += [
                "--cluster_name", "megatrio-test",
                "--cluster", f"nats://{self.host}:{self.cluster_port}",
                "--routes", ",".join(f"nats://{self.host}:{p}" for p in self.routes),
            ]  # fmt: skip
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_port(self.port)
        self.wait_jetstream()

    def wait_jetstream(self, timeout: float = 20.0) -> None:
        """Until the monitoring endpoint answers ``/healthz?js-enabled-only=true`` with ok."""
        import urllib.error
        import urllib.request

        deadline = time.monotonic() + timeout
        url = f"{self.monitor_url}/healthz?js-enabled-only=true"
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(url, timeout=1) as response:
                    if response.status == 200:
                        return
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.05)
        raise RuntimeError(f"nats-server {self.name} on {self.url}: JetStream not ready")

    def stop(self, sig: signal.Signals = signal.SIGTERM) -> None:
        """Stop it by pid (SIGKILL for a crash); wait until it is gone."""
        stop_process(self.proc, sig)
        self.proc = None

    def restart(self) -> None:
        self.stop()
        self.start()


def start_nats_cluster(directory: Path, size: int = 3) -> list[NatsServer]:
    """*size* JetStream nodes on loopback, routed to each other; all started and healthy."""
    cluster_ports = [free_port() for _ in range(size)]
    nodes = [
        NatsServer(
            directory / f"n{i + 1}",
            name=f"n{i + 1}",
            cluster_port=cluster_ports[i],
            routes=tuple(p for j, p in enumerate(cluster_ports) if j != i),
        )
        for i in range(size)
    ]
    # Started together: a node's JetStream waits for a quorum of its peers.
    threads = [threading.Thread(target=node.start) for node in nodes]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if any(node.proc is None for node in nodes):
        for node in nodes:
            node.stop()
        raise RuntimeError("a node of the NATS test cluster did not start (see its nats.log)")
    wait_meta_leader(nodes[0])
    return nodes


def wait_meta_leader(node: NatsServer, timeout: float = 30.0) -> str:
    """Until the JetStream meta group of *node*'s cluster has a leader; returns its name."""
    import json
    import urllib.request

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"{node.monitor_url}/jsz", timeout=1) as response:
                leader = json.loads(response.read()).get("meta_cluster", {}).get("leader")
            if leader:
                return str(leader)
        except OSError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"the NATS test cluster elected no JetStream meta leader in {timeout} s")
