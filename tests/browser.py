"""Load a local HTML file in headless Chromium and report what a person would hit: script errors, broken images.

Chromium 150 (Debian) prints every console message to stderr as
`[pid:tid:time:INFO:CONSOLE:<line>] "<message>", source: <url> (<line>)` with no level: console.log and
console.error look alike, and uncaught exceptions appear as `"Uncaught ..."`. A failed <img> prints nothing at
all (not even at --v=0), so the helper loads a copy of the page with a small probe script in front that turns
every failed resource load and every broken image into a console message, and writes the page height into the
DOM so the screenshot can cover the whole page.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

CONSOLE_LINE = re.compile(r":INFO:CONSOLE[:(]\d+\)?\] \"(?P<msg>.*)\", source: (?P<source>.*)$")
HEIGHT_ATTR = re.compile(r'data-kiln-height="(\d+)"')
MAX_SCREENSHOT_HEIGHT = 16000

# Runs before the page's own scripts (first thing in <head>): resource errors do not bubble, so listen in capture.
PROBE = """<script>(function () {
  window.addEventListener("error", function (e) {
    var t = e.target;
    if (t && t !== window && (t.src || t.href)) { console.error("kiln-probe: failed to load <" + t.tagName.toLowerCase()
      + "> " + String(t.src || t.href).slice(0, 120)); }
  }, true);
  window.addEventListener("load", function () {
    Array.prototype.forEach.call(document.images, function (img) {
      if (!(img.complete && img.naturalWidth > 0)) { console.error("kiln-probe: broken image "
        + String(img.currentSrc || img.src).slice(0, 120)); }
    });
    document.documentElement.setAttribute("data-kiln-height", String(document.documentElement.scrollHeight));
  });
})();</script>"""


@dataclass
class BrowserPage:
    dom: str
    console_errors: list[str] = field(default_factory=list)
    screenshot: Path | None = None


def find_chromium() -> str | None:
    """The Chromium binary (env KILN_CHROMIUM first), or None when this machine has none."""
    for candidate in (os.environ.get("KILN_CHROMIUM"), "chromium", "chromium-browser", "google-chrome", "chrome"):
        if candidate and (path := shutil.which(candidate)):
            return path
    return None


def console_messages(stderr: str) -> list[str]:
    """Every console message in Chromium's stderr log; the level is not printed, so all of them count."""
    return [m.group("msg") for line in stderr.splitlines() if (m := CONSOLE_LINE.search(line))]


def _with_probe(html: str, base_dir: Path) -> str:
    """The page with the probe and a <base> so relative paths still resolve from the original folder."""
    head = f'<base href="{base_dir.as_uri()}/">{PROBE}'
    match = re.search(r"<head[^>]*>", html, re.IGNORECASE)
    if match:
        return html[:match.end()] + head + html[match.end():]
    return head + html


def _run(chromium: str, url: str, extra: list[str], timeout: float) -> subprocess.CompletedProcess:
    """One headless run with a fresh profile, so no state leaks between runs or from the user's browser."""
    with tempfile.TemporaryDirectory(prefix="kiln-chromium-") as profile:
        cmd = [chromium, "--headless=new", "--no-sandbox", "--disable-gpu", "--allow-file-access-from-files",
               "--enable-logging=stderr", "--v=0", "--virtual-time-budget=5000", "--hide-scrollbars",
               "--no-first-run", "--no-default-browser-check", f"--user-data-dir={profile}", *extra, url]
        return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)


def render_in_browser(html_path: Path, screenshot: Path | None = None, *, width: int = 1280,
                      timeout: float = 90) -> BrowserPage:
    """The DOM after scripts ran, the console errors, and optionally a full-page screenshot."""
    chromium = find_chromium()
    if chromium is None:
        raise FileNotFoundError("chromium not found (install Debian's `chromium` or set KILN_CHROMIUM)")
    html_path = Path(html_path).resolve()
    with tempfile.TemporaryDirectory(prefix="kiln-page-") as tmp:
        probed = Path(tmp) / html_path.name
        probed.write_text(_with_probe(html_path.read_text(encoding="utf-8"), html_path.parent), encoding="utf-8")
        result = _run(chromium, probed.as_uri(), ["--dump-dom", f"--window-size={width},1000"], timeout)
        if result.returncode != 0 or not result.stdout.strip():
            raise RuntimeError(f"chromium failed (exit {result.returncode}): {result.stderr[-2000:]}")
        page = BrowserPage(dom=result.stdout, console_errors=console_messages(result.stderr))
        if screenshot is not None:
            page.screenshot = _screenshot(chromium, probed, Path(screenshot), page.dom, width, timeout)
    return page


def _screenshot(chromium: str, page: Path, out: Path, dom: str, width: int, timeout: float) -> Path:
    """A screenshot as tall as the page (measured by the probe), capped where Chromium stops drawing."""
    found = HEIGHT_ATTR.search(dom)
    height = min(int(found.group(1)) if found else 6000, MAX_SCREENSHOT_HEIGHT)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.unlink(missing_ok=True)
    result = _run(chromium, page.as_uri(), [f"--screenshot={out}", f"--window-size={width},{height}"], timeout)
    if not out.exists():
        raise RuntimeError(f"chromium wrote no screenshot (exit {result.returncode}): {result.stderr[-2000:]}")
    return out
