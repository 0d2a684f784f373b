"""results.json -> report.md and a self-contained report.html (inline SVG, inline CSS, no JS).

Sections: the tier and model; regressions against the previous report of the same tier; scores
(full tier: beside the paper's row for the size and the released model's row; quick tier: on
their own, since capped fine-tuning is not the paper's recipe); scores over pretraining steps;
the run's pretraining curves from its metrics.jsonl.
"""

from __future__ import annotations

from html import escape

from evaluation.report import plots
from evaluation.report.history import tier_of

_CSS = """body{font-family:system-ui,sans-serif;max-width:1000px;margin:2em auto;color:#1a202c}
table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #cbd5e0;padding:4px 8px;text-align:right}
th{background:#edf2f7}td:first-child,th:first-child,td.all{text-align:left}.regress{color:#c53030;font-weight:bold}
.grid{display:flex;flex-wrap:wrap;gap:8px}.note{color:#4a5568;font-size:90%}.tier{font-weight:bold}"""


def _fmt(v) -> str:
    return "–" if v is None else f"{v:.2f}"


def _delta(ours, ref):
    return None if ours is None or ref is None else ours - ref


def compares_with_paper(results: dict) -> bool:
    """Only full-recipe reports are set beside the paper: a quick report's fine-tuning is capped."""
    return tier_of(results) == "full"


def rows(results: dict) -> list[dict]:
    """One row per (result key, compared metric): the primary metric, plus any other a reference row has."""
    flagged = {f["task"]: f for f in results.get("regressions", [])}
    out = []
    for key, e in results["tasks"].items():
        paper = e.get("paper_metrics") or {e["primary"]: e.get("paper")}
        released = e.get("released_metrics") or {}
        extra = [m for m in list(paper) + list(released) if m != e["primary"]]
        for metric in [e["primary"]] + sorted(set(extra), key=extra.index):
            ours = e["median"].get(metric)
            out.append({"task": key, "metric": metric, "label": key if metric == e["primary"] else f"{key} {metric}",
                        "ours": ours, "paper": paper.get(metric), "released": released.get(metric),
                        "delta": _delta(ours, paper.get(metric)), "delta_released": _delta(ours, released.get(metric)),
                        "all": e["median"] if metric == e["primary"] else {},
                        "flag": flagged.get(key) if metric == e["primary"] else None})
    return out


def _labels(results: dict) -> tuple[str, str]:
    refs = results.get("paper_rows") or [{"label": results.get("paper_row", "paper")}]
    return refs[0]["label"], (refs[1]["label"] if len(refs) > 1 else "released")


def _tier_line(results: dict) -> str:
    tier = results.get("tier") or {}
    return tier.get("summary") or f"tier {tier_of(results)}"


def _curve_summary(pretrain) -> list[str]:
    lines = ["| metric | first (step) | last (step) | min | max |", "|---|---|---|---|---|"]
    for key, pts in pretrain.series.items():
        ys = [y for _, y in pts]
        lines.append(f"| {pretrain.title(key)} | {pts[0][1]:.4g} ({pts[0][0]:g}) | {pts[-1][1]:.4g} ({pts[-1][0]:g}) "
                     f"| {min(ys):.4g} | {max(ys):.4g} |")
    return lines


def markdown(results: dict, series: dict, pretrain=None) -> str:
    m = results["model"]
    paper_label, released_label = _labels(results)
    full = compares_with_paper(results)
    lines = [f"# {results['title']}", "",
             f"**Tier: {_tier_line(results)}.**", "",
             f"Model `{m['uri']}` (size {m['size']}, step {m.get('step', '?')}), {results['created']}. "
             f"Scores are dev-set medians over {results['seeds']} seed(s), 0-100.", ""]
    regs = results.get("regressions", [])
    lines += ["## Regressions", ""]
    lines += ([f"- **{r['task']}** {r['metric']}: {r['previous']:.2f} → {r['current']:.2f} "
               f"(−{r['drop']:.2f} > margin {r['margin']:g})" for r in regs]
              or [f"None (margin {results['regression_margin']:g} points vs the previous report of this tier)."])
    if full:
        lines += ["", "## Scores vs the ELECTRA paper", "",
                  f"Paper: {paper_label}. Released: {released_label}.", "",
                  "| task | metric | ours | paper | Δ | released | Δ released | all metrics | flag |",
                  "|---|---|---|---|---|---|---|---|---|"]
        for r in rows(results):
            allm = ", ".join(f"{k} {v:.2f}" for k, v in r["all"].items())
            lines.append(f"| {r['task']} | {r['metric']} | {_fmt(r['ours'])} | {_fmt(r['paper'])} | {_fmt(r['delta'])} "
                         f"| {_fmt(r['released'])} | {_fmt(r['delta_released'])} | {allm} "
                         f"| {'REGRESSION' if r['flag'] else ''} |")
        g = results.get("glue_average") or {}
        if any(v is not None for v in g.values()):
            lines.append(f"| GLUE average | 8 tasks | {_fmt(g.get('ours'))} | {_fmt(g.get('paper'))} "
                         f"| {_fmt(_delta(g.get('ours'), g.get('paper')))} | {_fmt(g.get('released'))} "
                         f"| {_fmt(_delta(g.get('ours'), g.get('released')))} | | |")
    else:
        lines += ["", "## Scores", "", "Quick tier: compared with earlier quick reports of this run, not with the paper.",
                  "", "| task | metric | ours | all metrics | flag |", "|---|---|---|---|---|"]
        for r in rows(results):
            if r["all"]:
                allm = ", ".join(f"{k} {v:.2f}" for k, v in r["all"].items())
                lines.append(f"| {r['task']} | {r['metric']} | {_fmt(r['ours'])} | {allm} "
                             f"| {'REGRESSION' if r['flag'] else ''} |")
    lines += ["", "## Over pretraining steps (this tier)", "", "| task | (step, score) … |", "|---|---|"]
    for key, pts in series.items():
        lines.append(f"| {key} | " + ", ".join(f"({x:g}, {y:.2f})" for x, y in pts) + " |")
    lines += ["", "## Pretraining", ""]
    if pretrain and pretrain.series:
        lines += [f"From `{pretrain.uri}` ({pretrain.lines} records)."
                  + (f" Not in it: {', '.join(pretrain.title(k) for k in pretrain.missing)}." if pretrain.missing
                     else ""), ""] + _curve_summary(pretrain)
    else:
        lines.append("No metrics.jsonl found for this model (set report.pretrain_metrics to point at one).")
    return "\n".join(lines) + "\n"


def _pretrain_html(pretrain) -> str:
    if not (pretrain and pretrain.series):
        return '<p class="note">No metrics.jsonl found for this model (set report.pretrain_metrics).</p>'
    charts = [plots.line_chart(f"pretrain-{key.replace('/', '-')}", pretrain.title(key), pts, x_label="step",
                               markers=len(pts) <= 30) for key, pts in pretrain.series.items()]
    missing = (f" Not in it: {escape(', '.join(pretrain.title(k) for k in pretrain.missing))}."
               if pretrain.missing else "")
    return (f'<p class="note">From <code>{escape(pretrain.uri)}</code> ({pretrain.lines} records, averaged into '
            f'at most a few hundred points per curve).{missing}</p><div class="grid">{"".join(charts)}</div>')


def _scores_html(results: dict, rs: list[dict]) -> str:
    if not compares_with_paper(results):
        primary = [r for r in rs if r["all"]]
        bars = plots.bar_chart("scores", "Dev scores (quick tier)", [r["label"] for r in primary],
                               [("ours", [r["ours"] for r in primary])], width=max(640, 70 * len(primary)))
        table = "".join(
            f'<tr{" class=regress" if r["flag"] else ""}><td>{escape(r["task"])}</td><td>{escape(r["metric"])}</td>'
            f'<td>{_fmt(r["ours"])}</td><td class="all">{escape(", ".join(f"{k} {v:.2f}" for k, v in r["all"].items()))}'
            f'</td><td>{"REGRESSION" if r["flag"] else ""}</td></tr>' for r in primary)
        return ('<h2 id="scores">Scores</h2><p class="note">Quick tier: compared with earlier quick reports of this '
                f'run, not with the paper (its fine-tuning is capped).</p>{bars}<table><tr><th>task</th><th>metric</th>'
                f'<th>ours</th><th>all metrics</th><th>flag</th></tr>{table}</table>')
    paper_label, released_label = _labels(results)
    bars = plots.bar_chart("paper-comparison", f"Dev scores vs {paper_label}", [r["label"] for r in rs],
                           [("ours (median)", [r["ours"] for r in rs]), ("paper", [r["paper"] for r in rs]),
                            ("released", [r["released"] for r in rs])], width=max(640, 80 * len(rs)))
    table = "".join(
        f'<tr{" class=regress" if r["flag"] else ""}><td>{escape(r["task"])}</td><td>{escape(r["metric"])}</td>'
        f'<td>{_fmt(r["ours"])}</td><td>{_fmt(r["paper"])}</td><td>{_fmt(r["delta"])}</td>'
        f'<td>{_fmt(r["released"])}</td><td>{_fmt(r["delta_released"])}</td>'
        f'<td class="all">{escape(", ".join(f"{k} {v:.2f}" for k, v in r["all"].items()))}</td>'
        f'<td>{"REGRESSION" if r["flag"] else ""}</td></tr>' for r in rs)
    g = results.get("glue_average") or {}
    if any(v is not None for v in g.values()):
        table += (f'<tr><td>GLUE average</td><td>8 tasks</td><td>{_fmt(g.get("ours"))}</td><td>{_fmt(g.get("paper"))}'
                  f'</td><td>{_fmt(_delta(g.get("ours"), g.get("paper")))}</td><td>{_fmt(g.get("released"))}</td>'
                  f'<td>{_fmt(_delta(g.get("ours"), g.get("released")))}</td><td></td><td></td></tr>')
    return (f'<h2 id="paper">Scores vs the ELECTRA paper</h2><p class="note">Paper: {escape(paper_label)}. '
            f'Released: {escape(released_label)}.</p>{bars}<table><tr><th>task</th><th>metric</th><th>ours</th>'
            f'<th>paper</th><th>Δ</th><th>released</th><th>Δ released</th><th>all metrics</th><th>flag</th></tr>'
            f'{table}</table>')


def html(results: dict, series: dict, pretrain=None) -> str:
    rs = rows(results)
    m = results["model"]
    full = compares_with_paper(results)
    steps = [plots.line_chart(f"steps-{key}", f"{key} ({results['tasks'][key]['primary']})", pts,
                              reference=results["tasks"][key].get("paper") if full else None)
             for key, pts in series.items() if key in results["tasks"]]
    regs = results.get("regressions", [])
    reg_html = ("<ul>" + "".join(
        f'<li class="regress">{escape(r["task"])} {escape(r["metric"])}: {r["previous"]:.2f} → {r["current"]:.2f} '
        f'(−{r["drop"]:.2f} &gt; {r["margin"]:g})</li>' for r in regs) + "</ul>") if regs else \
        f"<p>None (margin {results['regression_margin']:g} points vs the previous report of this tier).</p>"
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{escape(results['title'])}</title><style>{_CSS}</style></head>
<body>
<h1>{escape(results['title'])}</h1>
<p class="tier" id="tier" data-tier="{escape(tier_of(results))}">Tier: {escape(_tier_line(results))}</p>
<p class="note">Model <code>{escape(m['uri'])}</code>, size {escape(str(m['size']))}, step {escape(str(m.get('step')))};
{escape(results['created'])}. Dev-set medians over {results['seeds']} seed(s), 0-100.</p>
<h2 id="regressions">Regressions</h2>{reg_html}
{_scores_html(results, rs)}
<h2 id="steps">Over pretraining steps</h2>
<p class="note">Each point is one {escape(tier_of(results))}-tier report of run <code>{escape(results['name'])}</code>
{"; the dashed line is the paper" if full else ""}.</p>
<div class="grid">{''.join(steps)}</div>
<h2 id="pretraining">Pretraining</h2>
{_pretrain_html(pretrain)}
</body></html>
"""
