"""Running ``megatrio`` as a real subprocess and talking to it over real sockets."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

APPS = Path(__file__).resolve().with_name("apps")
_URL = re.compile(r"serving (http|admin) on (http://\S+)")


class Process:
    """A ``python -m megatrio ...`` child whose stdout/stderr lines are collected as they come."""

    def __init__(
        self,
        args: Sequence[str],
        *,
        cwd: Path = APPS,
        stdin: bool = False,
        env: Mapping[str, str] | None = None,
    ) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "megatrio", *args],
            cwd=cwd,
            stdin=subprocess.PIPE if stdin else subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})},
        )
        self.out: list[str] = []
        self.err: list[str] = []
        self._readers = [
            threading.Thread(target=self._read, args=(self.proc.stdout, self.out), daemon=True),
            threading.Thread(target=self._read, args=(self.proc.stderr, self.err), daemon=True),
        ]
        for reader in self._readers:
            reader.start()

    @staticmethod
    def _read(stream: Any, into: list[str]) -> None:
        for line in stream:
            into.append(line.rstrip("\n"))

    def wait_for(self, predicate: Callable[[], Any], timeout: float = 30, what: str = "") -> Any:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            result = predicate()
            if result:
                return result
            if self.proc.poll() is not None and not predicate():
                break
            time.sleep(0.02)
        raise AssertionError(
            f"timed out waiting for {what or predicate}\nstdout:\n"
            + "\n".join(self.out)
            + "\nstderr:\n"
            + "\n".join(self.err)
        )

    def wait_line(self, text: str, timeout: float = 30) -> str:
        def find() -> str | None:
            return next((line for line in self.out + self.err if text in line), None)

        found: str = self.wait_for(find, timeout, repr(text))
        return found

    def records(self) -> list[dict[str, Any]]:
        """The JSON log records printed on stdout so far."""
        parsed = []
        for line in list(self.out):
            if line.startswith("{"):
                with contextlib.suppress(json.JSONDecodeError):
                    parsed.append(json.loads(line))
        return parsed

    def signal(self, signum: signal.Signals) -> None:
        self.proc.send_signal(signum)

    def finish(self, timeout: float = 30) -> int:
        try:
            code = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError(
                f"process did not exit within {timeout} s\n" + "\n".join(self.out + self.err)
            ) from None
        self._close()
        return code

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self._close()

    def _close(self) -> None:
        for reader in self._readers:
            reader.join(timeout=5)
        for stream in (self.proc.stdin, self.proc.stdout, self.proc.stderr):
            if stream is not None and not stream.closed:
                stream.close()


class Server(Process):
    """``megatrio run TARGET`` on free loopback ports, ready once both listeners are bound."""

    def __init__(self, target: str, *extra: str, env: Mapping[str, str] | None = None) -> None:
        super().__init__(
            [
                "run",
                target,
                "--bind",
                "127.0.0.1:0",
                "--admin-bind",
                "127.0.0.1:0",
                "--log-format",
                "json",
                *extra,
            ],
            env=env,
        )
        urls: dict[str, str] = {}

        def both_bound() -> bool:
            for record in self.records():
                match = _URL.search(str(record.get("event", "")))
                if match:
                    urls[match[1]] = match[2]
            return len(urls) == 2

        self.wait_for(both_bound, what="http and admin listeners")
        self.url = urls["http"]
        self.admin = urls["admin"]
        self.port = int(self.url.rsplit(":", 1)[1])

    def get(self, path: str, *, base: str | None = None, timeout: float = 10) -> tuple[int, str]:
        try:
            with urllib.request.urlopen((base or self.url) + path, timeout=timeout) as r:
                return r.status, r.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode()


def raw_request(port: int, request: bytes, timeout: float = 5) -> tuple[bytes, bool]:
    """Send *request* on a fresh connection; read until EOF. Returns (data, saw_eof)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(request)
        data = b""
        try:
            while chunk := sock.recv(65536):
                data += chunk
        except TimeoutError:
            return data, False
        return data, True
