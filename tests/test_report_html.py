"""`lusjax report` writes one self-contained plots/report.html: plots inlined, the last
metrics, the carbon table and the config; a headless browser renders it when one is
installed (skipped otherwise)."""

import base64
import json
import shutil
import subprocess

import pytest

from lusjax import carbon, metrics, report


@pytest.fixture()
def run(tmp_path):
    run = tmp_path / "run"
    w = metrics.MetricsWriter(run)
    for step in range(1, 5):
        w.write(
            step, {"loss": 4.0 / step, "lr": 0.1, "probe_acc": 0.2 * step, "images_per_s": 100.0}
        )
    (run / "config.json").write_text(json.dumps({"method": "simclr", "batch_size": 8}))
    with carbon.tracked(run, "pretrain"):
        pass
    return run


def test_report_html_holds_plots_metrics_carbon_and_config(run):
    written = report.render(run)
    page = run / "plots" / "report.html"
    assert page in written
    text = page.read_text()
    pngs = [p for p in written if p.suffix == ".png"]
    assert len(pngs) >= 3 and text.count('src="data:image/png;base64,') == len(pngs)
    first = text.split('src="data:image/png;base64,', 1)[1].split('"', 1)[0]
    assert base64.b64decode(first)[:4] == b"\x89PNG"  # inlined, not a link
    assert "Last logged step (4)" in text and "<td>loss</td><td>1</td>" in text
    assert "<th>phase</th>" in text and "<td>pretrain</td>" in text  # the carbon table
    assert "&quot;batch_size&quot;: 8" in text  # the config, escaped


def _browser():
    return next(
        (
            shutil.which(b)
            for b in ("chromium", "chromium-browser", "google-chrome")
            if shutil.which(b)
        ),
        None,
    )


def test_a_headless_browser_renders_it(run, tmp_path):
    browser = _browser()
    if browser is None:
        pytest.skip("no headless browser (chromium) installed")
    report.render(run)
    shot = tmp_path / "shot.png"
    dom = subprocess.run(
        [
            browser,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--dump-dom",
            (run / "plots" / "report.html").as_uri(),
        ],
        check=False,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert "<table>" in dom.stdout and "<img" in dom.stdout, dom.stderr[-500:]
    subprocess.run(
        [
            browser,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            f"--screenshot={shot}",
            "--window-size=1000,2000",
            (run / "plots" / "report.html").as_uri(),
        ],
        check=False,
        capture_output=True,
        timeout=120,
    )
    assert shot.exists() and shot.stat().st_size > 10_000  # a page with plots, not blank
