"""The eval's figures (matplotlib, PNG) and its self-contained HTML page (figures embedded as base64: the
page needs no network and no other file)."""

from __future__ import annotations

import base64
import html
import io
from typing import Any

from .report import EvalReport
from .stats import reliability_bins

__all__ = ["frontier_figure", "png", "reliability_figure", "render_html"]


def _figure(**kwargs: Any) -> Any:
    """A matplotlib Figure outside pyplot: no global state, no backend switch (notebooks keep theirs)."""
    try:
        from matplotlib.figure import Figure
    except ModuleNotFoundError:
        from council.errors import InputError

        raise InputError("the HTML report's figures need matplotlib: pip install 'council[eval]'") from None
    return Figure(**kwargs)


def reliability_figure(report: EvalReport) -> Any:
    """A reliability diagram per arm: accuracy against stated confidence in 10 bins (dot size: items)."""
    arms = [a.arm for a in report.arms]
    cols = min(4, len(arms))
    nrows = -(-len(arms) // cols)
    fig = _figure(figsize=(3.2 * cols, 3.4 * nrows))
    axes = fig.subplots(nrows, cols, squeeze=False)
    flat = [ax for row in axes for ax in row]
    for ax in flat[len(arms):]:
        ax.set_visible(False)
    for ax, arm in zip(flat, arms):
        rows = [o for o in report.outcomes if o.arm == arm and o.status == "ok" and o.confidence is not None
                and o.correct is not None]
        ax.plot([0, 1], [0, 1], color="#999", lw=1, ls="--")
        if rows:
            bins = reliability_bins([o.confidence for o in rows], [bool(o.correct) for o in rows])  # type: ignore[misc]
            ax.plot([b[1] for b in bins], [b[2] for b in bins], color="#3366aa", lw=1)
            ax.scatter([b[1] for b in bins], [b[2] for b in bins], s=[12 + 4 * b[3] for b in bins], color="#3366aa")
        stats = report.arm(arm)
        ece = f"ECE {stats.ece:.3f}" if stats.ece is not None else "ECE n/a"
        ax.set_title(f"{arm}\n{ece}, n={len(rows)}", fontsize=9)
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1.02)
        ax.set_xlabel("stated confidence")
        ax.set_ylabel("accuracy")
    fig.tight_layout()
    return fig


def frontier_figure(report: EvalReport) -> Any:
    """Accuracy (with its interval) against cost per item as if run alone; the Pareto frontier joined."""
    fig = _figure(figsize=(5.5, 3.8))
    ax = fig.subplots()
    points = []
    for a in report.arms:
        if a.accuracy is None or not a.scored:
            continue
        cost = a.cost_usd / max(1, a.items - a.skipped_budget)
        points.append((cost, a.accuracy, a.arm))
        if a.ci_low is not None and a.ci_high is not None:
            ax.errorbar([cost], [a.accuracy], yerr=[[a.accuracy - a.ci_low], [a.ci_high - a.accuracy]], fmt="o",
                        color="#3366aa", capsize=3)
        else:
            ax.plot([cost], [a.accuracy], "o", color="#3366aa")
        ax.annotate(a.arm, (cost, a.accuracy), textcoords="offset points", xytext=(5, 5), fontsize=8)
    frontier, best = [], -1.0
    for cost, acc, _ in sorted(points):
        if acc > best:
            frontier.append((cost, acc))
            best = acc
    if len(frontier) > 1:
        ax.plot([p[0] for p in frontier], [p[1] for p in frontier], color="#cc6633", lw=1, label="frontier")
        ax.legend(fontsize=8)
    ax.set_xlabel("cost per item, USD (as if run alone)")
    ax.set_ylabel("accuracy")
    ax.set_title("cost and accuracy per arm", fontsize=10)
    fig.tight_layout()
    return fig


def png(fig: Any) -> bytes:
    """The figure as PNG bytes."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    return buf.getvalue()


def _fmt(v: float | None, kind: str = "f") -> str:
    if v is None:
        return "n/a"
    return {"pct": f"{100 * v:.1f}%", "usd": f"${v:.6f}", "s": f"{v:.2f} s"}.get(kind, f"{v:.3f}")


def _arm_rows(report: EvalReport) -> str:
    rows = []
    for a in report.arms:
        ci = (f"{_fmt(a.ci_low, 'pct')} – {_fmt(a.ci_high, 'pct')}" if a.ci_low is not None
              else html.escape(a.ci_note or "n/a"))
        cells = [a.arm, f"{a.correct}/{a.scored}", _fmt(a.accuracy, "pct"), ci, _fmt(a.cost_per_correct_usd, "usd"),
                 _fmt(a.cost_usd, "usd"), str(a.tokens), _fmt(a.latency_p50_s, "s"), _fmt(a.latency_p90_s, "s"),
                 _fmt(a.abstention_rate, "pct"), _fmt(a.ece) if a.ece is not None else html.escape(a.ece_note or ""),
                 _fmt(a.escalation_rate, "pct"), str(a.failed), str(a.skipped_budget)]
        rows.append("<tr>" + "".join(f"<td>{html.escape(c) if i == 0 else c}</td>" for i, c in enumerate(cells)) + "</tr>")
    return "\n".join(rows)


_HEAD = ["arm", "correct", "accuracy", "95% interval", "cost / correct", "cost (alone)", "tokens", "p50", "p90",
         "abstained", "ECE", "escalated", "failed", "skipped"]
_STYLE = """body{font-family:sans-serif;margin:2em;max-width:1200px}table{border-collapse:collapse;margin:1em 0}
td,th{border:1px solid #ccc;padding:3px 8px;font-size:13px;text-align:right}td:first-child{text-align:left}
img{max-width:100%;border:1px solid #eee}code{background:#f4f4f4;padding:1px 4px}"""


def render_html(report: EvalReport) -> str:
    """The report as one HTML page, figures embedded."""
    i = report.info
    figs = [("reliability", reliability_figure(report)), ("frontier", frontier_figure(report))]
    images = "\n".join(f'<h2>{name}</h2><img alt="{name}" src="data:image/png;base64,'
                       f'{base64.b64encode(png(fig)).decode()}">' for name, fig in figs)
    tags = "".join(f"<tr><td>{html.escape(t.arm)}</td><td>{html.escape(t.tag)}</td><td>{t.scored}</td>"
                   f"<td>{_fmt(t.accuracy, 'pct')}</td><td>"
                   + (f"{_fmt(t.ci_low, 'pct')} – {_fmt(t.ci_high, 'pct')}" if t.ci_low is not None else html.escape(t.ci_note or ""))
                   + "</td></tr>" for t in report.tags)
    bad = "".join(f"<li>line {b.line}: {html.escape(b.reason)}</li>" for b in report.bad_rows)
    policies = "".join(f"<li><code>{html.escape(k)}</code>: <code>{html.escape(v)}</code></li>" for k, v in i.policies.items())
    return f"""<!doctype html><html><head><meta charset="utf-8"><title>council eval {i.eval_id}</title>
<style>{_STYLE}</style></head><body>
<h1>council eval <code>{i.eval_id}</code></h1>
<p>task <b>{i.task}</b> · golden set <code>{html.escape(i.golden_path)}</code> (sha256 <code>{i.golden_hash[:16]}</code>,
{i.items_total} items) · status {i.status} · recipes {html.escape(', '.join(i.recipes))}</p>
<p>spent <b>${report.spent_usd:.6f}</b> in all (this invocation ${report.spent_now_usd:.6f}); the arms run alone
would have cost ${report.as_if_alone_usd:.6f}{' · <b>stopped by the budget</b>' if report.budget_exhausted else ''}</p>
<table><tr>{''.join(f'<th>{h}</th>' for h in _HEAD)}</tr>
{_arm_rows(report)}</table>
<h2>by tag</h2><table><tr><th>arm</th><th>tag</th><th>scored</th><th>accuracy</th><th>95% interval</th></tr>{tags}</table>
{images}
<h2>policies</h2><ul>{policies}</ul>
{'<h2>skipped rows of the golden file</h2><ul>' + bad + '</ul>' if bad else ''}
</body></html>
"""
