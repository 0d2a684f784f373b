"""results.json -> report.md and a self-contained report.html (inline SVG, inline CSS, no JS)."""

from __future__ import annotations

from html import escape

from evaluation.report import plots

_CSS = """body{font-family:system-ui,sans-serif;max-width:1000px;margin:2em auto;color:#1a202c}
table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #cbd5e0;padding:4px 8px;text-align:right}
th{background:#edf2f7}td:first-child,th:first-child,td:nth-child(6){text-align:left}.regress{color:#c53030;font-weight:bold}
.grid{display:flex;flex-wrap:wrap;gap:8px}.note{color:#4a5568;font-size:90%}"""


def _fmt(v) -> str:
    return "–" if v is None else f"{v:.2f}"


def rows(results: dict) -> list[dict]:
    """One row per (result key, compared metric): the primary metric, plus any other the paper has."""
    flagged = {f["task"]: f for f in results.get("regressions", [])}
    out = []
    for key, e in results["tasks"].items():
        paper = e.get("paper_metrics") or {e["primary"]: e.get("paper")}
        for metric in [e["primary"]] + [m for m in paper if m != e["primary"]]:
            ours, ref = e["median"].get(metric), paper.get(metric)
            out.append({"task": key, "metric": metric, "label": key if metric == e["primary"] else f"{key} {metric}",
                        "ours": ours, "paper": ref, "delta": None if ours is None or ref is None else ours - ref,
                        "all": e["median"] if metric == e["primary"] else {},
                        "flag": flagged.get(key) if metric == e["primary"] else None})
    return out


def markdown(results: dict, series: dict) -> str:
    m = results["model"]
    lines = [f"# {results['title']}", "",
             f"Model `{m['uri']}` (size {m['size']}, step {m.get('step', '?')}), {results['created']}. "
             f"Scores are dev-set medians over {results['seeds']} seed(s), 0-100. Paper row: {results['paper_row']}.",
             ""]
    regs = results.get("regressions", [])
    lines += ["## Regressions", ""]
    lines += ([f"- **{r['task']}** {r['metric']}: {r['previous']:.2f} → {r['current']:.2f} "
               f"(−{r['drop']:.2f} > margin {r['margin']:g})" for r in regs]
              or [f"None (margin {results['regression_margin']:g} points vs the previous report)."])
    lines += ["", "## Scores vs the ELECTRA paper", "", "| task | metric | ours | paper | Δ | all metrics | flag |",
              "|---|---|---|---|---|---|---|"]
    for r in rows(results):
        allm = ", ".join(f"{k} {v:.2f}" for k, v in r["all"].items())
        lines.append(f"| {r['task']} | {r['metric']} | {_fmt(r['ours'])} | {_fmt(r['paper'])} | {_fmt(r['delta'])} "
                     f"| {allm} | {'REGRESSION' if r['flag'] else ''} |")
    lines += ["", "## Over pretraining steps", "", "| task | " + " | ".join(["(step, score) …"]) + " |", "|---|---|"]
    for key, pts in series.items():
        lines.append(f"| {key} | " + ", ".join(f"({x:g}, {y:.2f})" for x, y in pts) + " |")
    return "\n".join(lines) + "\n"


def html(results: dict, series: dict) -> str:
    rs = rows(results)
    m = results["model"]
    bars = plots.bar_chart("paper-comparison", f"Dev scores vs {results['paper_row']}", [r["label"] for r in rs],
                           [("ours (median)", [r["ours"] for r in rs]), ("paper", [r["paper"] for r in rs])],
                           width=max(640, 70 * len(rs)))
    steps = [plots.line_chart(f"steps-{key}", f"{key} ({results['tasks'][key]['primary']})", pts,
                              reference=results["tasks"][key].get("paper"))
             for key, pts in series.items()]
    regs = results.get("regressions", [])
    reg_html = ("<ul>" + "".join(
        f'<li class="regress">{escape(r["task"])} {escape(r["metric"])}: {r["previous"]:.2f} → {r["current"]:.2f} '
        f'(−{r["drop"]:.2f} &gt; {r["margin"]:g})</li>' for r in regs) + "</ul>") if regs else \
        f"<p>None (margin {results['regression_margin']:g} points vs the previous report).</p>"
    table = "".join(
        f'<tr{" class=regress" if r["flag"] else ""}><td>{escape(r["task"])}</td><td>{escape(r["metric"])}</td>'
        f'<td>{_fmt(r["ours"])}</td><td>{_fmt(r["paper"])}</td><td>{_fmt(r["delta"])}</td>'
        f'<td>{escape(", ".join(f"{k} {v:.2f}" for k, v in r["all"].items()))}</td>'
        f'<td>{"REGRESSION" if r["flag"] else ""}</td></tr>' for r in rs)
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{escape(results['title'])}</title><style>{_CSS}</style></head>
<body>
<h1>{escape(results['title'])}</h1>
<p class="note">Model <code>{escape(m['uri'])}</code>, size {escape(str(m['size']))}, step {escape(str(m.get('step')))};
{escape(results['created'])}. Dev-set medians over {results['seeds']} seed(s), 0-100.</p>
<h2 id="regressions">Regressions</h2>{reg_html}
<h2 id="paper">Scores vs the ELECTRA paper</h2>
{bars}
<table><tr><th>task</th><th>metric</th><th>ours</th><th>paper</th><th>Δ</th><th>all metrics</th><th>flag</th></tr>{table}</table>
<h2 id="steps">Over pretraining steps</h2>
<p class="note">Each point is one report of run <code>{escape(results['name'])}</code>; the dashed line is the paper.</p>
<div class="grid">{''.join(steps)}</div>
</body></html>
"""
