"""A self-contained HTML page: per domain, sessions per day (bars) and failure rate (line). Pure.

Plain inline SVG: no external assets, no JavaScript, readable offline and in a mail client.
Every text from a report is HTML-escaped (reports come from strangers).
"""

from __future__ import annotations

from datetime import date
from html import escape

from mta_sts_policyd.reports_in.summary import Summary, by_count, daily_totals, not_counted_note

WIDTH, HEIGHT, PAD = 720, 220, 40


def render_page(summaries: list[Summary], generated: str) -> str:
    sections = "\n".join(_section(s) for s in summaries) or "<p>No reports stored yet.</p>"
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<title>TLS reports received</title>
<style>
body {{ font-family: sans-serif; margin: 2em; color: #222; }}
table {{ border-collapse: collapse; margin: 1em 0; }}
td, th {{ border: 1px solid #ccc; padding: 0.2em 0.6em; text-align: right; }}
th {{ background: #f3f3f3; }} td.l, th.l {{ text-align: left; }}
.bar {{ fill: #5b8bd6; }} .rate {{ fill: none; stroke: #d64b4b; stroke-width: 2; }}
.axis {{ stroke: #888; }} text {{ font-size: 11px; fill: #444; }}
</style></head><body>
<h1>TLS reports received</h1>
<p>Generated {escape(generated)}. Bars: sessions per UTC day (all reporting organisations);
red line: share of failed sessions (0-100 %).</p>
{sections}
</body></html>
"""


def _section(summary: Summary) -> str:
    rows = "\n".join(
        f"<tr><td class=l>{line.day.isoformat()}</td><td class=l>{escape(line.organization)}</td>"
        f"<td>{line.sessions}</td><td>{line.failures}</td><td>{line.failure_rate:.1%}</td>"
        f"<td class=l>{escape(by_count(line.by_result))}</td>"
        f"<td class=l>{escape(by_count(line.by_mx))}</td></tr>"
        for line in summary.lines
    )
    stopped = "".join(
        f"<li>{escape(org)}: last report {day.isoformat()}</li>" for org, day in summary.stopped
    )
    future = summary.not_counted_future
    note = f"<p>{escape(not_counted_note(future))}.</p>" if future else ""
    return f"""<h2>{escape(summary.domain)}</h2>
{_svg(daily_totals(summary))}
<table><tr><th class=l>day</th><th class=l>organisation</th><th>sessions</th>
<th>failures</th><th>rate</th><th class=l>failures by result type</th>
<th class=l>failures by MX</th></tr>
{rows}</table>
{note}{f"<p>Stopped reporting:</p><ul>{stopped}</ul>" if stopped else ""}"""


def _svg(totals: list[tuple[date, int, int]]) -> str:
    if not totals:
        return ""
    peak = max(s for _, s, _ in totals) or 1
    step = (WIDTH - 2 * PAD) / len(totals)
    plot = HEIGHT - 2 * PAD
    bars, points = [], []
    for i, (day, sessions, failures) in enumerate(totals):
        x = PAD + i * step
        h = plot * sessions / peak
        bars.append(
            f'<rect class="bar" x="{x + step * 0.1:.1f}" y="{HEIGHT - PAD - h:.1f}" '
            f'width="{step * 0.8:.1f}" height="{h:.1f}"><title>{day.isoformat()}: '
            f"{sessions} sessions, {failures} failed</title></rect>"
        )
        rate = failures / sessions if sessions else 0.0
        points.append(f"{x + step / 2:.1f},{HEIGHT - PAD - plot * rate:.1f}")
    first, last = totals[0][0].isoformat(), totals[-1][0].isoformat()
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" '
        f'role="img" aria-label="sessions and failure rate per day">'
        f'<line class="axis" x1="{PAD}" y1="{HEIGHT - PAD}" x2="{WIDTH - PAD}" '
        f'y2="{HEIGHT - PAD}"/>{"".join(bars)}'
        f'<polyline class="rate" points="{" ".join(points)}"/>'
        f'<text x="{PAD}" y="{HEIGHT - 10}">{first}</text>'
        f'<text x="{WIDTH - PAD}" y="{HEIGHT - 10}" text-anchor="end">{last}</text>'
        f'<text x="4" y="{PAD}">{peak}</text></svg>'
    )
