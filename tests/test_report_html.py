"""report.html renders in a real browser (headless Chromium) with its plots, from no external asset."""

import json
import re
import subprocess
from pathlib import Path

import pytest

from evaluation import report
from evaluation.report import plots

CHROMIUM = Path("/usr/bin/chromium")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync"]

# Run in the page after layout: how many plots, and how many have a real rendered size and marks.
PROBE = """<script>
window.addEventListener('load', () => {
  const plots = [...document.querySelectorAll('svg.plot')];
  const drawn = plots.filter(s => { const b = s.getBBox(); return b.width > 50 && b.height > 50; });
  const out = {plots: plots.map(s => s.dataset.plot), drawn: drawn.length,
               bars: document.querySelectorAll('svg.plot rect.bar').length,
               lines: document.querySelectorAll('svg.plot polyline.series').length,
               external: [...document.querySelectorAll('[src],link[href]')].length};
  const pre = document.createElement('pre'); pre.id = 'probe'; pre.textContent = JSON.stringify(out);
  document.body.appendChild(pre);
});
</script>"""


def _results(step: int, created: str, cola: float) -> dict:
    tasks = {
        "cola": {"task": "cola", "primary": "mcc", "median": {"mcc": cola}, "seeds": [], "paper": 57.0},
        "mnli_m": {"task": "mnli", "primary": "accuracy", "median": {"accuracy": 70.0}, "seeds": [],
                   "paper": 81.3},
        "squad_v2": {"task": "squad_v2", "primary": "f1", "median": {"exact": 60.0, "f1": 63.0}, "seeds": [],
                     "paper": None, "paper_metrics": {"f1": None, "exact": 70.1}},
    }
    return {"title": "Evaluation of demo", "name": "demo", "created": created, "created_id": created, "seeds": 3,
            "paper_row": "ELECTRA-Small (released)", "model": {"uri": "s3://b/model", "size": "small", "step": step},
            "tasks": tasks}


@pytest.fixture
def html_report(tmp_path):
    out = tmp_path / "out"
    for i, (step, cola) in enumerate([(100_000, 40.0), (200_000, 52.0)]):
        r = _results(step, f"2026010{i + 1}T000000.000Z", cola)
        d = out / "reports" / "demo" / r["created_id"]
        d.mkdir(parents=True)
        (d / "results.json").write_text(json.dumps(r))
    m = report.write(str(out), _results(300_000, "20260103T000000.000Z", 45.0), margin=1.0, inputs=[],
                     config={"test": True})
    return Path(m["report_uri"]) / "report.html"


def test_report_html_is_self_contained(html_report):
    html = html_report.read_text()
    assert "http://" not in html.replace('xmlns="http://www.w3.org/2000/svg"', "") and "https://" not in html
    assert "<script" not in html
    assert html.count('class="plot"') == 1 + 3  # paper comparison + one over-steps chart per task
    assert "REGRESSION" in html  # CoLA fell from 52 to 45


@pytest.mark.skipif(not CHROMIUM.exists(), reason="/usr/bin/chromium is absent (apt-get install chromium)")
def test_report_renders_plots_in_headless_chromium(html_report, tmp_path):
    probe = tmp_path / "probe.html"
    probe.write_text(html_report.read_text().replace("</body>", PROBE + "</body>"))
    cmd = [str(CHROMIUM), *FLAGS, f"--user-data-dir={tmp_path / 'profile'}", "--virtual-time-budget=5000",
           "--dump-dom", probe.as_uri()]
    dom = subprocess.run(cmd, capture_output=True, text=True, timeout=120).stdout
    found = re.search(r'<pre id="probe">(.*?)</pre>', dom)
    assert found, f"probe did not run; chromium printed: {dom[:500]}"
    info = json.loads(found.group(1).replace("&quot;", '"'))
    assert info["plots"] == ["paper-comparison", "steps-cola", "steps-mnli_m", "steps-squad_v2"]
    assert info["drawn"] == 4  # every plot has a laid-out size
    assert info["bars"] == 7  # ours + paper: cola, mnli_m, squad_v2 exact; ours only: squad_v2 f1 (no paper F1)
    assert info["lines"] == 3  # three reports -> a line in every over-steps chart
    assert info["external"] == 0
    shot = tmp_path / "report.png"
    subprocess.run([str(CHROMIUM), *FLAGS, f"--user-data-dir={tmp_path / 'profile2'}", "--window-size=1100,1400",
                    f"--screenshot={shot}", html_report.as_uri()], capture_output=True, timeout=120)
    assert shot.exists() and shot.stat().st_size > 10_000


def test_bar_chart_skips_missing_values():
    svg = plots.bar_chart("x", "t", ["a", "b"], [("ours", [1.0, 2.0]), ("paper", [None, 3.0])])
    assert svg.count('class="bar"') == 3
