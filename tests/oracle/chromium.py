"""Headless Chromium (Debian's ``chromium``) as an oracle for the HTML reports: load a file, collect every console
error, uncaught exception and browser log error, evaluate expressions in the page, and take a screenshot.

It speaks the DevTools protocol over ``--remote-debugging-pipe`` (JSON messages ended by NUL on file descriptors 3
and 4), so it needs nothing beyond the standard library. A tiny Python exec wrapper puts the pipes on 3 and 4,
whatever descriptors the test process has open.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import select
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

BINARIES = ("chromium", "chromium-browser", "google-chrome")
# moves both pipes above 9 first, so that neither is overwritten when the other lands on 3 or 4
_WRAPPER = (
    "import fcntl, os, sys; r, w = (fcntl.fcntl(int(fd), fcntl.F_DUPFD, 10) for fd in sys.argv[1:3]); "
    "os.dup2(r, 3); os.dup2(w, 4); os.close(r); os.close(w); os.execvp(sys.argv[3], sys.argv[3:])"
)


def find() -> str | None:
    return next((path for name in BINARIES if (path := shutil.which(name))), None)


@dataclass
class PageLoad:
    errors: list[str] = field(default_factory=list)  # console errors, uncaught exceptions, log errors
    values: dict[str, Any] = field(default_factory=dict)  # expression -> its value in the loaded page
    screenshot: bytes = b""


def load(binary: str, path: Path, expressions: list[str], *, width: int = 1400, timeout: float = 60) -> PageLoad:
    """Open ``path`` in a fresh headless Chromium, wait for the load event, evaluate ``expressions`` and take a
    full-page screenshot."""
    to_r, to_w = os.pipe()
    from_r, from_w = os.pipe()
    profile = tempfile.mkdtemp(prefix="xenabi-chromium-")
    args = [binary, "--headless", "--no-sandbox", "--disable-gpu", "--remote-debugging-pipe", "--no-first-run",
            f"--user-data-dir={profile}", f"--window-size={width},1000", "about:blank"]  # fmt: skip
    proc = subprocess.Popen([sys.executable, "-c", _WRAPPER, str(to_r), str(from_w), *args], pass_fds=(to_r, from_w),
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    os.close(to_r)
    os.close(from_w)
    session = _Session(to_w, from_r, time.monotonic() + timeout)
    result = PageLoad()
    try:
        target = session.call("Target.createTarget", {"url": "about:blank"})["targetId"]
        session.id = session.call("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        for method in ("Runtime.enable", "Log.enable", "Page.enable"):
            session.call(method)
        session.call("Page.navigate", {"url": path.resolve().as_uri()})
        session.wait_for("Page.loadEventFired")
        for expression in expressions:
            answer = session.call("Runtime.evaluate", {"expression": expression, "returnByValue": True})
            result.values[expression] = answer["result"].get("value")
        shot = session.call("Page.captureScreenshot", {"format": "png", "captureBeyondViewport": True})
        result.screenshot = base64.b64decode(shot["data"])
        result.errors = session.errors()
        with contextlib.suppress(OSError):
            session.send("Browser.close", browser=True)
        proc.wait(timeout=15)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        os.close(to_w)
        os.close(from_r)
        shutil.rmtree(profile, ignore_errors=True)
    return result


class _Session:
    def __init__(self, out: int, inp: int, deadline: float) -> None:
        self.out, self.inp, self.deadline = out, inp, deadline
        self.id: str | None = None
        self.counter = 0
        self.buffer = b""
        self.events: list[dict[str, Any]] = []

    def send(self, method: str, params: dict[str, Any] | None = None, *, browser: bool = False) -> int:
        self.counter += 1
        message: dict[str, Any] = {"id": self.counter, "method": method, "params": params or {}}
        if self.id is not None and not browser:
            message["sessionId"] = self.id
        os.write(self.out, json.dumps(message).encode() + b"\0")
        return self.counter

    def call(self, method: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
        wanted = self.send(method, params)
        while True:
            message = self._next()
            if message.get("id") == wanted:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                return dict(message.get("result", {}))
            self.events.append(message)

    def wait_for(self, event: str) -> None:
        while not any(e.get("method") == event for e in self.events):
            self.events.append(self._next())

    def _next(self) -> dict[str, Any]:
        while b"\0" not in self.buffer:
            left = self.deadline - time.monotonic()
            ready, _, _ = select.select([self.inp], [], [], max(0.0, left))
            if not ready:
                raise TimeoutError("Chromium did not answer in time")
            chunk = os.read(self.inp, 1 << 20)
            if not chunk:
                raise EOFError("Chromium closed the DevTools pipe")
            self.buffer += chunk
        raw, self.buffer = self.buffer.split(b"\0", 1)
        message: dict[str, Any] = json.loads(raw)
        return message

    def errors(self) -> list[str]:
        out = []
        for event in self.events:
            method, params = event.get("method"), event.get("params", {})
            if method == "Runtime.consoleAPICalled" and params.get("type") in ("error", "assert"):
                out.append("console: " + " ".join(str(a.get("value", a.get("description"))) for a in params["args"]))
            elif method == "Runtime.exceptionThrown":
                details = params["exceptionDetails"]
                out.append("exception: " + str(details.get("exception", {}).get("description", details.get("text"))))
            elif method == "Log.entryAdded" and params.get("entry", {}).get("level") == "error":
                entry = params["entry"]
                out.append(f"log ({entry.get('source')}): {entry.get('text')} {entry.get('url', '')}".strip())
        return out
