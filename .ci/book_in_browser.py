#!/usr/bin/env python3
"""The rendered book, checked in a real browser (headless Chromium, over the DevTools
protocol): every page of book/book loads with no script error and no failed request, no
raw `{{#` include text is left, every image loads, no transcript is cut off at the
right (its lines wrap inside the column), and every figure's smallest text is at least
14 px as the page shows it (an SVG scaled down to the column shrinks its text). mdBook
itself reports none of these.

Usage: book_in_browser.py BOOK_DIR [--screenshots DIR]
Needs: chromium-headless-shell (Debian) and the websocket-client package (PyPI).
Exit 0 when every page passes; 1 with one line per problem.
"""

import argparse
import ctypes
import json
import os
import pathlib
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request

import websocket  # websocket-client

BROWSERS = ["chromium-headless-shell", "chromium", "chromium-browser"]

# Runs in each page once it has loaded; returns the problems it sees, as strings.
CHECK_PAGE = r"""
(() => {
  const problems = [];
  const main = document.querySelector('main') || document.body;
  const text = main.innerText;
  const raw = text.indexOf('{{#');
  if (raw >= 0) problems.push('raw include text: ' + JSON.stringify(text.slice(raw, raw + 60)));
  for (const img of document.images) {
    if (!img.complete || img.naturalWidth === 0) problems.push('image does not load: ' + img.getAttribute('src'));
  }
  for (const pre of main.querySelectorAll('pre')) {
    const code = pre.querySelector('code');
    if (!pre.offsetParent || (code && code.classList.contains('language-rust'))) continue;
    // A transcript must show every character: nothing beyond the right edge.
    const box = code || pre;  // highlight.js makes the <code> the scrolling box
    const width = Math.max(pre.scrollWidth - pre.clientWidth, box.scrollWidth - box.clientWidth);
    if (width > 1) {
      const first = (code || pre).innerText.split('\n')[0];
      problems.push(`transcript cut off (${width}px hidden at the right): ` + JSON.stringify(first.slice(0, 60)));
    }
  }
  return problems;
})()
"""

# The SVG figures on the page: where each comes from, and how wide it is shown.
FIGURES = r"""
Array.from(document.images)
  .filter(img => img.currentSrc.endsWith('.svg'))
  .map(img => ({src: img.currentSrc, shown: img.getBoundingClientRect().width}))
"""

SMALLEST_TEXT_PX = 14


def figure_problems(figures):
    """A problem for each figure whose smallest text is under SMALLEST_TEXT_PX as shown."""
    problems = []
    for figure in figures:
        path = pathlib.Path(urllib.parse.unquote(urllib.parse.urlparse(figure["src"]).path))
        svg = path.read_text(encoding="utf-8")
        width = re.search(r'<svg[^>]*\bwidth="([0-9.]+)"', svg)
        sizes = [float(size) for size in re.findall(r'font-size="([0-9.]+)"', svg)]
        if not width or not sizes or figure["shown"] <= 0:
            continue
        smallest = min(sizes) * figure["shown"] / float(width.group(1))
        if smallest < SMALLEST_TEXT_PX:
            problems.append(f"figure text {smallest:.1f} px as shown (under {SMALLEST_TEXT_PX}): "
                            f"{path.name}, {float(width.group(1)):.0f} px wide shown at "
                            f"{figure['shown']:.0f}")
    return problems


def start_browser(profile):
    browser = next((shutil.which(name) for name in BROWSERS if shutil.which(name)), None)
    if browser is None:
        sys.exit("book_in_browser: no headless Chromium (apt-get install chromium-headless-shell)")
    process = subprocess.Popen(
        [browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
         "--no-first-run", "--disable-background-networking", "--disable-component-update",
         "--disable-sync", f"--user-data-dir={profile}", "--remote-debugging-port=0",
         "--window-size=1280,900", "about:blank"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        start_new_session=True)  # Debian's chromium-headless-shell is a script that forks it
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        line = process.stderr.readline()
        found = re.search(r"DevTools listening on (ws://\S+)", line)
        if found:
            port = re.search(r":(\d+)/", found.group(1)).group(1)
            return process, port
        if not line and process.poll() is not None:
            break
    process.kill()
    sys.exit("book_in_browser: the browser did not start")


def stop_browser(browser, profile):
    """Kills the browser's whole process group, then any process still using its profile
    (the wrapper script's child would outlive a kill of the script alone)."""
    try:
        os.killpg(browser.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    browser.wait()
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        children = reap_orphans()
        left = [pid for pid in os.listdir("/proc") if pid.isdigit() and uses(pid, profile)]
        if not left and not children:
            return
        for pid in left:
            try:
                os.kill(int(pid), signal.SIGKILL)
            except ProcessLookupError:
                pass
        time.sleep(0.1)
    sys.exit(f"book_in_browser: browser processes left behind: {left}")


def reap_orphans():
    """Waits for every child that has ended: as the subreaper (main), the browser's own
    processes come to us when the wrapper dies, and must not stay zombies. True while
    some child is still running (still dying)."""
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return False
        if pid == 0:
            return True


def uses(pid, profile):
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as cmdline:
            return f"--user-data-dir={profile}".encode() in cmdline.read()
    except OSError:
        return False


class Page:
    """One browser tab, driven by DevTools protocol messages."""

    def __init__(self, port):
        targets = json.load(urllib.request.urlopen(f"http://127.0.0.1:{port}/json"))
        page = next(t for t in targets if t["type"] == "page")
        self.socket = websocket.create_connection(page["webSocketDebuggerUrl"], timeout=30)
        self.next_id = 0
        self.events = []
        for domain in ["Page", "Runtime", "Log", "Network"]:
            self.call(f"{domain}.enable")

    def call(self, method, **params):
        self.next_id += 1
        self.socket.send(json.dumps({"id": self.next_id, "method": method, "params": params}))
        while True:
            message = json.loads(self.socket.recv())
            if message.get("id") == self.next_id:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                return message.get("result", {})
            self.events.append(message)

    def wait_for(self, method, seconds=20):
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if any(event.get("method") == method for event in self.events):
                return True
            self.events.append(json.loads(self.socket.recv()))
        return False

    def visit(self, url):
        """Loads url and returns its problems."""
        self.events = []
        self.call("Page.navigate", url=url)
        problems = [] if self.wait_for("Page.loadEventFired") else ["did not finish loading"]
        time.sleep(0.2)  # let the page's scripts (search index, highlighting) run
        result = self.call("Runtime.evaluate", expression=CHECK_PAGE, returnByValue=True)
        problems += result["result"].get("value", ["the page check did not run"])
        figures = self.call("Runtime.evaluate", expression=FIGURES, returnByValue=True)
        problems += figure_problems(figures["result"].get("value", []))
        for event in self.events:
            method, params = event.get("method"), event.get("params", {})
            if method == "Runtime.exceptionThrown":
                details = params["exceptionDetails"]
                message = details.get("exception", {}).get("description", details.get("text"))
                problems.append(f"script error: {message.splitlines()[0]}")
            elif method == "Runtime.consoleAPICalled" and params.get("type") == "error":
                problems.append(f"console error: {params['args'][0].get('value')}")
            elif method == "Network.loadingFailed" and not params.get("canceled"):
                problems.append(f"request failed: {params.get('errorText')}")
        return problems

    def screenshot(self, path):
        data = self.call("Page.captureScreenshot", format="png")["data"]
        import base64
        path.write_bytes(base64.b64decode(data))


def main():
    # PR_SET_CHILD_SUBREAPER (36): the browser's processes, orphaned when its wrapper
    # script is killed, become our children, so we can reap them (pid 1 may not).
    ctypes.CDLL(None, use_errno=True).prctl(36, 1, 0, 0, 0)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("book", type=pathlib.Path, help="the built book (book/book)")
    parser.add_argument("--screenshots", type=pathlib.Path, help="write a PNG per page here")
    args = parser.parse_args()
    pages = sorted(p for p in args.book.rglob("*.html")
                   if p.name not in ("print.html", "toc.html", "404.html"))
    if not pages:
        sys.exit(f"book_in_browser: no pages in {args.book} (run mdbook build book first)")
    if args.screenshots:
        args.screenshots.mkdir(parents=True, exist_ok=True)
    failures = 0
    with tempfile.TemporaryDirectory(prefix="proclab-browser.") as profile:
        browser, port = start_browser(profile)
        try:
            page = Page(port)
            for path in pages:
                name = path.relative_to(args.book)
                problems = page.visit(path.resolve().as_uri())
                for problem in problems:
                    print(f"{name}: {problem}")
                failures += len(problems)
                if args.screenshots:
                    page.screenshot(args.screenshots / (str(name).replace(os.sep, "_") + ".png"))
        finally:
            stop_browser(browser, profile)
    print(f"book in the browser: {len(pages)} pages, {failures} problems")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
