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
  const tier = document.getElementById('tier');
  const out = {plots: plots.map(s => s.dataset.plot), drawn: drawn.length,
               bars: document.querySelectorAll('svg.plot rect.bar').length,
               lines: document.querySelectorAll('svg.plot polyline.series').length,
               pretrain: plots.filter(s => s.dataset.plot.startsWith('pretrain-'))
                              .map(s => [s.dataset.plot, s.querySelector('polyline.series') ?
                                         s.querySelector('polyline.series').getAttribute('points').split(' ').length : 0]),
               tier: tier ? [tier.dataset.tier, tier.textContent, tier.getBoundingClientRect().height > 0] : null,
               external: [...document.querySelectorAll('[src],link[href]')].length};
  const pre = document.createElement('pre'); pre.id = 'probe'; pre.textContent = JSON.stringify(out);
  document.body.appendChild(pre);
});
</script>"""


def _metrics_jsonl(path: Path, steps: int = 2000) -> Path:
    """A pretraining run's metrics.jsonl as the trainer writes it, plus fields later versions add and a bad line."""
    lines = []
    for step in range(1, steps + 1):
        rec = {"step": step, "loss": 10.0 / (1 + step / 100), "mlm_loss": 6.0 / (1 + step / 100),
               "rtd_loss": 0.08 / (1 + step / 500), "lr": 2e-4 * min(1.0, step / 200), "grad_norm": 1.0,
               "tokens_seen": step * 4096, "gen_acc": step / (steps + 50), "disc_acc": 0.9 + step / (20 * steps),
               "disc_precision": 0.5 + step / (4 * steps), "disc_recall": 0.3 + step / (4 * steps)}
        if step % 10 == 0:
            rec.update(tokens_per_s=50_000.0 + step, mfu=0.41)
        if step % 500 == 0:
            rec["validation"] = {"disc_auc": 0.8 + step / (20 * steps)}  # nested: drawn as validation/disc_auc
            rec["warnings"] = ["recall_at_zero"]  # text: ignored
        lines.append(json.dumps(rec))
    lines.insert(7, "{not json")
    path.write_text("\n".join(lines) + "\n")
    return path


def _results(step: int, created: str, cola: float, tier: str = "full") -> dict:
    tasks = {
        "cola": {"task": "cola", "primary": "mcc", "median": {"mcc": cola}, "seeds": [], "paper": 57.0},
        "mnli_m": {"task": "mnli", "primary": "accuracy", "median": {"accuracy": 70.0}, "seeds": [],
                   "paper": 81.3},
        "squad_v2": {"task": "squad_v2", "primary": "f1", "median": {"exact": 60.0, "f1": 63.0}, "seeds": [],
                     "paper": None, "paper_metrics": {"f1": None, "exact": 70.1}},
    }
    return {"title": "Evaluation of demo", "name": "demo", "created": created, "created_id": created, "seeds": 3,
            "paper_row": "ELECTRA-Small (released)", "model": {"uri": "s3://b/model", "size": "small", "step": step},
            "tier": {"name": tier, "summary": f"{tier}: test tier"}, "tasks": tasks}


@pytest.fixture
def html_report(tmp_path):
    out = tmp_path / "out"
    for i, (step, cola) in enumerate([(100_000, 40.0), (200_000, 52.0)]):
        r = _results(step, f"2026010{i + 1}T000000.000Z", cola)
        d = out / "reports" / "demo" / r["created_id"]
        d.mkdir(parents=True)
        (d / "results.json").write_text(json.dumps(r))
    quick = _results(250_000, "20260102T120000.000Z", 10.0, tier="quick")  # another tier: not this report's history
    (out / "reports" / "demo" / quick["created_id"]).mkdir(parents=True)
    (out / "reports" / "demo" / quick["created_id"] / "results.json").write_text(json.dumps(quick))
    m = report.write(str(out), _results(300_000, "20260103T000000.000Z", 45.0), margin=1.0, inputs=[],
                     config={"test": True}, pretrain_metrics=str(_metrics_jsonl(tmp_path / "metrics.jsonl")))
    return Path(m["report_uri"]) / "report.html"


PRETRAIN_PLOTS = ["pretrain-loss", "pretrain-mlm_loss", "pretrain-rtd_loss", "pretrain-gen_acc", "pretrain-disc_acc",
                  "pretrain-disc_precision", "pretrain-disc_recall", "pretrain-lr", "pretrain-tokens_per_s",
                  "pretrain-mfu", "pretrain-grad_norm", "pretrain-validation-disc_auc"]


def test_report_html_is_self_contained(html_report):
    html = html_report.read_text()
    assert "http://" not in html.replace('xmlns="http://www.w3.org/2000/svg"', "") and "https://" not in html
    assert "<script" not in html
    assert html.count('class="plot"') == 1 + 3 + len(PRETRAIN_PLOTS)  # paper bars, over-steps per task, curves
    assert "REGRESSION" in html  # CoLA fell from 52 to 45 (the quick report's 10.0 in between is another tier)
    results = json.loads((html_report.parent / "results.json").read_text())
    assert results["previous_report"].endswith("20260102T000000.000Z")
    assert results["pretraining"]["records"] == 2000 and results["pretraining"]["missing"] == []
    md = (html_report.parent / "report.md").read_text()
    assert "**Tier: full: test tier.**" in md and "| total loss | " in md


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
    assert info["plots"] == ["paper-comparison", "steps-cola", "steps-mnli_m", "steps-squad_v2"] + PRETRAIN_PLOTS
    assert info["drawn"] == len(info["plots"])  # every plot has a laid-out size
    assert info["bars"] == 7  # ours + paper: cola, mnli_m, squad_v2 exact; ours only: squad_v2 f1 (no paper F1)
    assert info["lines"] == 3 + len(PRETRAIN_PLOTS)  # three full reports -> a line per over-steps chart; each curve
    points = dict(info["pretrain"])
    assert 100 <= points["pretrain-loss"] <= 600  # 2000 steps averaged into a few hundred buckets
    assert points["pretrain-validation-disc_auc"] == 4 and points["pretrain-mfu"] > 50
    assert info["tier"] == ["full", "Tier: full: test tier", True]
    assert info["external"] == 0
    shot = tmp_path / "report.png"
    subprocess.run([str(CHROMIUM), *FLAGS, f"--user-data-dir={tmp_path / 'profile2'}", "--window-size=1100,1400",
                    f"--screenshot={shot}", html_report.as_uri()], capture_output=True, timeout=120)
    assert shot.exists() and shot.stat().st_size > 10_000


def test_bar_chart_skips_missing_values():
    svg = plots.bar_chart("x", "t", ["a", "b"], [("ours", [1.0, 2.0]), ("paper", [None, 3.0])])
    assert svg.count('class="bar"') == 3


def test_quick_report_is_not_set_beside_the_paper(tmp_path):
    m = report.write(str(tmp_path), _results(1000, "20260101T000000.000Z", 30.0, tier="quick"), margin=1.0,
                     inputs=[], config={})
    html = (Path(m["report_uri"]) / "report.html").read_text()
    assert 'data-tier="quick"' in html and 'data-plot="scores"' in html and 'data-plot="paper-comparison"' not in html
    assert "No metrics.jsonl found" in html and 'class="reference"' not in html  # no paper line over the steps
    assert m["tier"] == "quick"


def test_curves_stream_into_bounded_buckets(tmp_path):
    from evaluation.report import curves

    c = curves.load(str(_metrics_jsonl(tmp_path / "m.jsonl", steps=5000)), max_points=100)
    assert c.lines == 5000 and c.bad_lines == 1
    assert list(c.series)[:10] == list(curves.KNOWN)  # known curves first, in order; then the rest
    assert "tokens_seen" not in c.series and "warnings" not in c.series
    loss = c.series["loss"]
    assert 100 <= len(loss) <= 200 and [x for x, _ in loss] == sorted(x for x, _ in loss)
    width = 5000 / len(loss)
    first_bucket = [10.0 / (1 + s / 100) for s in range(1, int(round(width)))]
    assert loss[0][1] == pytest.approx(sum(first_bucket) / len(first_bucket), rel=0.05)  # a bucket mean
    assert c.series["lr"][-1][1] == pytest.approx(2e-4)
