"""The Snakemake HTML report as a reader sees it: rendered by headless Chromium, every view of the report's
app (landing page, each category, each result with its caption) opened in turn and its text collected.

Snakemake 9's report is a JavaScript app that renders one view at a time, so reading the HTML file's
source proves little. A small driver page loads the report in an iframe, calls the app's own navigation
(``app.showCategory``, ``app.showResultInfo``: what the report's links call) and writes the text of each
rendered view into its own DOM, which ``chromium --dump-dom`` prints.
"""

from __future__ import annotations

import html
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

DRIVER = """<!DOCTYPE html><html><body>
<iframe id="report" src="{report}" style="width:1400px;height:1000px"></iframe>
<pre id="views"></pre>
<script>
const frame = document.getElementById("report");
const sleep = ms => new Promise(r => setTimeout(r, ms));
frame.onload = async () => {{
  const w = frame.contentWindow;
  const views = [];
  const view = async (name, go) => {{
    if (go) go(w.eval("app"));
    await sleep(300);
    views.push("=== " + name + "\\n" + w.document.body.innerText);
  }};
  try {{
    await view("landing");
    for (const c of Object.keys(w.eval("categories"))) {{
      // back to the menu first, as a reader does (the category list is built when it is opened)
      w.eval("app").setView({{ navbarMode: "menu" }});
      await sleep(100);
      await view("category " + c, a => a.showCategory(c));
    }}
    for (const r of Object.keys(w.eval("results"))) await view("result " + r, a => a.showResultInfo(r));
    views.push("=== VIEWS-DONE");
  }} catch (err) {{
    views.push("=== DRIVER-ERROR " + err);
  }}
  document.getElementById("views").textContent = views.join("\\n");
}};
</script></body></html>
"""


def chromium() -> str | None:
    """The Chromium binary; in CI (CI=true) a missing browser fails the test instead of skipping it."""
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    if exe is None:
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail("CI=true but Chromium is not installed: the report must be checked in a real browser "
                        "(.ci/run installs it with apt-get install chromium)")
        pytest.skip("Chromium is not installed (apt-get install chromium); CI runs this check")
    return exe


def rendered_views(report: Path, timeout: float = 180) -> dict[str, str]:
    """{view name: rendered text} of every view of ``report`` (landing, categories, results)."""
    driver = report.parent / f".{report.stem}-driver.html"
    driver.write_text(DRIVER.format(report=html.escape(report.name)))
    try:
        res = subprocess.run([chromium(), "--headless", "--no-sandbox", "--disable-gpu",
                              "--allow-file-access-from-files", "--virtual-time-budget=120000",
                              "--dump-dom", driver.as_uri()], capture_output=True, text=True, timeout=timeout)
    finally:
        driver.unlink()
    m = re.search(r'<pre id="views">(.*?)</pre>', res.stdout, flags=re.S)
    assert m, f"the driver page did not render (rc {res.returncode}): {res.stderr[-2000:]}"
    text = html.unescape(m.group(1))
    assert "=== VIEWS-DONE" in text, text[-3000:]
    views = {}
    for block in text.split("=== ")[1:]:
        name, _, body = block.partition("\n")
        views[name] = body
    views.pop("VIEWS-DONE")
    return views


def screenshot(report: Path, out: Path, timeout: float = 180) -> Path:
    subprocess.run([chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--window-size=1400,1000",
                    f"--screenshot={out}", report.as_uri()], capture_output=True, timeout=timeout, check=True)
    return out
