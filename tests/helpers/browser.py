"""Headless Chromium (Debian's ``chromium``) driven over the DevTools protocol through a pipe
(``--remote-debugging-pipe``: NUL-separated JSON on file descriptors 3 and 4), so no websocket library is needed.

Used by the report tests: load a page, collect console errors and uncaught exceptions, evaluate JavaScript (in the page
or in one of its frames, e.g. a sandboxed iframe), take PNG screenshots.
"""

from __future__ import annotations

import base64
import json
import os
import select
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

__all__ = ["CHROMIUM", "Browser", "hot_pixels", "skip_without_chromium"]

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def skip_without_chromium():
    """A pytest mark that skips a test when Chromium is absent, saying how to install it."""
    import pytest

    return pytest.mark.skipif(
        CHROMIUM is None, reason="needs Debian's chromium for headless page tests (apt-get install chromium)"
    )


class Browser:
    """One headless Chromium with one page (tab) of ``width`` x ``height`` CSS pixels.

    Software WebGL2 (SwiftShader) is turned on, so WebGL pages (NiiVue) render without a GPU; ``flags`` are further
    command-line switches (e.g. ``("--disable-webgl",)`` for a browser without WebGL).

    Attributes:
        console: ``(level, text, session)`` of every console message, log entry and uncaught exception since the
            last :meth:`open` (``session``: the protocol session of the frame it came from).
    """

    def __init__(
        self,
        profile_dir: Path,
        width: int = 1200,
        height: int = 900,
        timeout_s: float = 60.0,
        flags: tuple[str, ...] = (),
    ) -> None:
        if CHROMIUM is None:
            raise RuntimeError("chromium is not installed (apt-get install chromium).")
        self.timeout_s = timeout_s
        to_browser_read, self._to_browser = os.pipe()
        self._from_browser, from_browser_write = os.pipe()

        def wire_pipes() -> None:  # in the child: the protocol reads fd 3 and writes fd 4
            read_end, write_end = os.dup(to_browser_read), os.dup(from_browser_write)
            os.dup2(read_end, 3)
            os.dup2(write_end, 4)

        command = [
            CHROMIUM, "--headless=new", "--remote-debugging-pipe", "--no-sandbox", "--no-first-run",
            "--use-angle=swiftshader", "--enable-unsafe-swiftshader", "--ignore-gpu-blocklist",
            "--disable-extensions", "--disable-background-networking", "--disable-component-update",
            "--disable-default-apps", "--disable-sync", "--mute-audio", "--hide-scrollbars",
            f"--user-data-dir={profile_dir}", f"--window-size={width},{height}", *flags, "about:blank",
        ]  # fmt: skip
        self.process = subprocess.Popen(
            command,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            close_fds=False,
            preexec_fn=wire_pipes,
        )
        os.close(to_browser_read)
        os.close(from_browser_write)
        self._buffer = b""
        self._next_id = 0
        self._events: list[dict] = []
        self.console: list[tuple[str, str, str | None]] = []
        self.contexts: dict[int, dict] = {}
        # sessions of out-of-process frames (sandboxed iframes get their own process), attached as they appear
        self.frame_sessions: list[str] = []
        self._enabled_frames: set[str] = set()
        target = self.send("Target.createTarget", url="about:blank")["targetId"]
        self.session = self.send("Target.attachToTarget", targetId=target, flatten=True)["sessionId"]
        for domain in ("Page", "Runtime", "Log"):
            self.send(f"{domain}.enable", session=True)
        self.send(
            "Emulation.setDeviceMetricsOverride",
            session=True,
            width=width,
            height=height,
            deviceScaleFactor=1,
            mobile=False,
        )
        self.send("Target.setAutoAttach", session=True, autoAttach=True, waitForDebuggerOnStart=False, flatten=True)

    def __enter__(self) -> Browser:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def close(self) -> None:
        try:
            self.send("Browser.close")
        except (OSError, RuntimeError, TimeoutError):
            pass
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=10)
        for fd in (self._to_browser, self._from_browser):
            try:
                os.close(fd)
            except OSError:
                pass

    def _read_message(self, deadline: float) -> dict:
        while b"\0" not in self._buffer:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("chromium did not answer in time")
            ready, _, _ = select.select([self._from_browser], [], [], left)
            if ready:
                chunk = os.read(self._from_browser, 1 << 20)
                if not chunk:
                    raise RuntimeError(f"chromium exited (code {self.process.poll()})")
                self._buffer += chunk
        message, self._buffer = self._buffer.split(b"\0", 1)
        return json.loads(message)

    def _record(self, event: dict) -> None:
        method, params, session = event.get("method"), event.get("params", {}), event.get("sessionId")
        if method == "Runtime.consoleAPICalled":
            text = " ".join(str(arg.get("value", arg.get("description", ""))) for arg in params.get("args", []))
            self.console.append((params.get("type", "log"), text, session))
        elif method == "Runtime.exceptionThrown":
            details = params.get("exceptionDetails", {})
            text = details.get("exception", {}).get("description") or details.get("text", "")
            self.console.append(("exception", text, session))
        elif method == "Log.entryAdded":
            entry = params.get("entry", {})
            self.console.append((entry.get("level", "info"), f"{entry.get('source')}: {entry.get('text')}", session))
        elif method == "Runtime.executionContextCreated":
            context = params["context"]
            self.contexts[context["id"]] = context
        elif method == "Runtime.executionContextsCleared":
            self.contexts.clear()
        elif method == "Target.attachedToTarget" and params.get("targetInfo", {}).get("type") == "iframe":
            self.frame_sessions.append(params["sessionId"])
        elif method == "Target.detachedFromTarget" and params.get("sessionId") in self.frame_sessions:
            self.frame_sessions.remove(params["sessionId"])

    def send(self, method: str, session: bool | str = False, **params: Any) -> dict:
        """Send one protocol command (to the page's session if ``session`` is True, or to the session it names) and
        return its result."""
        self._next_id += 1
        message = {"id": self._next_id, "method": method, "params": params}
        if session:
            message["sessionId"] = self.session if session is True else session
        os.write(self._to_browser, json.dumps(message).encode() + b"\0")
        deadline = time.monotonic() + self.timeout_s
        while True:
            reply = self._read_message(deadline)
            if reply.get("id") == self._next_id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply.get("result", {})
            self._record(reply)

    def pump(self, seconds: float) -> None:
        """Read events for ``seconds`` (console messages, frames' contexts)."""
        deadline = time.monotonic() + seconds
        try:
            while True:
                self._record(self._read_message(deadline))
        except TimeoutError:
            pass

    def open(self, url: str) -> None:
        """Navigate the page to ``url`` (console messages start afresh)."""
        self.console = []
        self.frame_sessions, self._enabled_frames = [], set()
        self.send("Page.navigate", session=True, url=url)

    def frames(self) -> list[str]:
        """The sessions of the page's out-of-process frames, their console watched from the first call on."""
        for frame in self.frame_sessions:
            if frame not in self._enabled_frames:
                self._enabled_frames.add(frame)
                for domain in ("Runtime", "Log"):
                    self.send(f"{domain}.enable", session=frame)
        return list(self.frame_sessions)

    def evaluate(self, expression: str, context_id: int | None = None, frame: str | None = None) -> Any:
        """The value of a JavaScript expression in the page, in its execution context ``context_id`` (an in-process
        frame's), or in the out-of-process frame whose session is ``frame`` (see :meth:`frames`)."""
        params: dict[str, Any] = {"expression": expression, "returnByValue": True, "awaitPromise": True}
        if context_id is not None:
            params["contextId"] = context_id
        result = self.send("Runtime.evaluate", session=frame or True, **params)
        if "exceptionDetails" in result:
            raise RuntimeError(f"{expression}: {result['exceptionDetails']}")
        return result.get("result", {}).get("value")

    def wait_for(self, expression: str, timeout_s: float = 60.0, context_id: int | None = None) -> Any:
        """Poll a JavaScript expression until it is truthy; returns its value (TimeoutError after ``timeout_s``)."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            try:
                value = self.evaluate(expression, context_id)
            except RuntimeError:  # e.g. the page is still navigating
                value = None
            if value:
                return value
            self.pump(0.25)
        raise TimeoutError(f"{expression!r} stayed false for {timeout_s:g} s; console: {self.console[-10:]}")

    def wait_in_frames(self, expression: str, timeout_s: float = 90.0) -> tuple[Any, dict[str, Any]]:
        """Poll ``expression`` in every frame (in-process frames' contexts, out-of-process frames such as a sandboxed
        iframe) until it is truthy in one; returns its value and where (``evaluate`` keyword arguments)."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            places: list[dict[str, Any]] = [{"context_id": context} for context in list(self.contexts)]
            places += [{"frame": frame} for frame in self.frames()]
            for place in places:
                try:
                    value = self.evaluate(expression, **place)
                except RuntimeError:  # a context that went away
                    continue
                if value:
                    return value, place
            self.pump(0.5)
        raise TimeoutError(f"{expression!r} stayed false in every frame; console: {self.console[-10:]}")

    def screenshot(self, path: Path) -> Path:
        """A PNG of the page's viewport."""
        data = self.send("Page.captureScreenshot", session=True, format="png")["data"]
        path.write_bytes(base64.b64decode(data))
        return path

    def errors(self, frame: str | None = None) -> list[tuple[str, str]]:
        """Console errors, error log entries and uncaught exceptions seen since the last :meth:`open` (only those of
        the out-of-process frame whose session is ``frame``, when given)."""
        return [
            (level, text)
            for level, text, session in self.console
            if level in ("error", "exception", "assert") and (frame is None or session == frame)
        ]


def hot_pixels(png: Path, box: list[float] | None = None) -> np.ndarray:
    """(H, W) bool: pixels of a screenshot in heat colours (a warm colour map: red to yellow, far from any grey, the
    outlines' green and magenta and the crosshair's light blue), inside ``box`` (left, top, right, bottom) if given."""
    rgb = np.asarray(Image.open(png).convert("RGB")).astype(int)
    red, green, blue = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    hot = (red > 180) & (blue < 110) & (red - blue > 100) & (green > 40)
    if box is not None:
        inside = np.zeros_like(hot)
        left, top, right, bottom = (int(round(v)) for v in box)
        inside[top:bottom, left:right] = True
        hot &= inside
    return hot
