"""The html report in a real browser: headless Chromium draws the SVG timeline, and the page
fetches nothing (the browser's own network log shows no request the page made)."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from engine.log import read_log
from engine.report.html import SLICE_COLOUR, render_html
from engine.report.model import build_report
from tests.report.png import colours

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def _hex(colour: str) -> tuple[int, int, int]:
    return int(colour[1:3], 16), int(colour[3:5], 16), int(colour[5:7], 16)


def _shoot(page: Path, tmp_path: Path, name: str) -> tuple[bytes, set[str]]:
    """A screenshot of the page, and the URLs of every request the page itself made."""
    assert CHROMIUM is not None
    shot, netlog = tmp_path / f"{name}.png", tmp_path / f"{name}.netlog.json"
    done = subprocess.run(
        [
            CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu",
            "--disable-background-networking", "--no-first-run",
            f"--user-data-dir={tmp_path / ('profile-' + name)}",
            # Nothing leaves the machine whatever asks: every host name fails to resolve.
            "--host-resolver-rules=MAP * ~NOTFOUND",
            "--window-size=1100,1100", f"--log-net-log={netlog}",
            f"--screenshot={shot}", page.as_uri(),
        ],
        capture_output=True, timeout=120, check=False,
    )  # fmt: skip
    if done.returncode != 0 or not shot.exists():
        pytest.skip(f"headless chromium could not run here: {done.stderr.decode()[-300:]}")
    log = json.loads(netlog.read_text())
    # The browser's own traffic (component updates, ...) has no origin; a page's has one.
    by_page = {
        e["params"]["url"]
        for e in log["events"]
        if "url" in e.get("params", {})
        and e["params"].get("initiator", "not an origin") != "not an origin"
    }
    return shot.read_bytes(), by_page


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (.ci/run installs it)")
def test_html_report_draws_the_timeline_and_fetches_nothing(
    verdict_logs: dict[str, Path], tmp_path: Path
) -> None:
    html = render_html(build_report(read_log(verdict_logs["crash"])))
    assert "<script" not in html
    assert "<link" not in html
    assert "url(" not in html
    page = tmp_path / "crash.html"
    page.write_text(html)
    png, fetched = _shoot(page, tmp_path, "report")
    assert fetched == set(), f"the report fetched {fetched}"
    seen = colours(png)
    # The DELETE ioctl's bar and the vCPUs' SRCU read sides are drawn, in their colours.
    assert seen[_hex(SLICE_COLOUR["ioctl"])] > 2000
    assert seen[_hex(SLICE_COLOUR["srcu_read"])] > 500

    # The same probe sees a page that does fetch something: the check above can fail.
    control = tmp_path / "control.html"
    control.write_text('<img src="http://slotlab.invalid/x.png">')
    _, fetched = _shoot(control, tmp_path, "control")
    assert "http://slotlab.invalid/x.png" in fetched


def test_html_carries_what_the_text_report_says(verdict_logs: dict[str, Path]) -> None:
    from html import escape

    from engine.report.text import header_fields

    report = build_report(read_log(verdict_logs["violation"]))
    html = render_html(report)
    for key, value in header_fields(report):
        assert f"<th>{key}</th><td>{escape(value)}</td>" in html
    assert escape(" ".join(report.command)) in html
    assert escape(report.explanation) in html
    for row in report.events:
        assert f"<td>{row.seq}</td>" in html
    for key, value in report.counters:
        assert f"<th>{escape(key)}</th><td>{escape(value)}</td>" in html
    assert html.count("<svg") == 1
