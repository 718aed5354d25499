"""HTML pieces of the static site (``harness.site``): the page shell with its inline CSS, tables,
links and inline-SVG charts. Everything is a pure function of its arguments (no clock, no paths
outside the site, fixed number formats), so equal inputs give equal bytes; nothing refers to the
network (inline SVG in HTML needs no namespace URL)."""

from __future__ import annotations

from html import escape

CSS = """
body{font:15px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:0;color:#1d2430;background:#fff}
header{background:#1d2430;color:#fff;padding:.6em 1.5em}
header a{color:#fff;text-decoration:none;font-weight:600}
main{max-width:1150px;padding:0 1.5em 3em}
h1{font-size:1.6em;margin:.8em 0 .3em}h2{font-size:1.25em;margin:1.6em 0 .4em;border-bottom:1px solid #d8dde6}
h3{font-size:1.05em;margin:1.2em 0 .3em}
table{border-collapse:collapse;margin:.5em 0;font-size:.93em}
th,td{padding:.3em .6em;border-bottom:1px solid #e4e8ef;text-align:left;vertical-align:middle}
th{background:#f2f4f8;font-weight:600}td.num,th.num{text-align:right;font-variant-numeric:tabular-nums}
td.best{font-weight:700}td.tie{text-decoration:underline}
.note{color:#4a5363;font-size:.88em;margin:.2em 0}ul.notes{padding-left:1.2em}ul.notes li{margin:.25em 0}
a{color:#1f5fbf}code{font-size:.9em;background:#f2f4f8;padding:0 .25em}
figure{margin:1em 0}figure img{max-width:100%;border:1px solid #e4e8ef}figcaption{font-size:.88em;color:#4a5363}
.charts{display:flex;flex-wrap:wrap;gap:1em}.charts figure{margin:0}
svg text{font:11px system-ui,sans-serif;fill:#4a5363}
"""
BAR_COLOURS = {"best": "#1f5fbf", "tie": "#5b8fd9", "": "#8a93a3"}


def page(title: str, body: str, depth: int) -> str:
    """A whole HTML page; ``depth`` is how many folders below the site root it lies."""
    root = "../" * depth
    return (
        f'<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f'<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>{escape(title)}</title>\n<style>{CSS}</style>\n</head>\n<body>\n"
        f'<header><a href="{root}index.html">Few-shot harness results</a></header>\n'
        f"<main>\n{body}\n</main>\n</body>\n</html>\n"
    )


def link(href: str, text: str) -> str:
    return f'<a href="{escape(href)}">{escape(text)}</a>'


def table(
    headers: list[str], rows: list[list[str]], numeric: set[int] = frozenset(), classes: list[list[str]] | None = None
) -> str:
    """A table of HTML cells (already escaped); ``numeric`` columns align right; ``classes`` per cell."""
    head = "".join(f"<th{' class=num' if i in numeric else ''}>{escape(h)}</th>" for i, h in enumerate(headers))
    lines = []
    for r, row in enumerate(rows):
        cells = []
        for i, cell in enumerate(row):
            names = " ".join(c for c in ("num" if i in numeric else "", classes[r][i] if classes else "") if c)
            cells.append(f'<td class="{names}">{cell}</td>' if names else f"<td>{cell}</td>")
        lines.append("<tr>" + "".join(cells) + "</tr>")
    return f"<table>\n<thead><tr>{head}</tr></thead>\n<tbody>\n" + "\n".join(lines) + "\n</tbody>\n</table>"


def notes(items: list[str]) -> str:
    return '<ul class="notes">' + "".join(f"<li>{escape(n)}</li>" for n in items) + "</ul>" if items else ""


def ci_bar(value: float, ci: float, low: float, high: float, mark: str, width: int = 220) -> str:
    """An inline SVG: the 95% CI as a bar and the value as a dot, on the shared axis [low, high]."""

    def x(v: float) -> float:
        return 6 + (width - 12) * (min(max(v, low), high) - low) / (high - low)

    colour = BAR_COLOURS[mark]
    return (
        f'<svg width="{width}" height="16" role="img" aria-label="{value:.2f} ± {ci:.2f}">'
        f"<title>{value:.2f} ± {ci:.2f}</title>"
        f'<line x1="6" y1="8" x2="{width - 6}" y2="8" stroke="#e4e8ef"/>'
        f'<line x1="{x(value - ci):.1f}" y1="8" x2="{x(value + ci):.1f}" y2="8" stroke="{colour}" stroke-width="4"/>'
        f'<circle cx="{x(value):.1f}" cy="8" r="4.5" fill="{colour}" stroke="#fff"/></svg>'
    )


def axis_range(values: list[float]) -> tuple[float, float]:
    """[low, high] around ``values`` with a little room, never empty."""
    low, high = min(values), max(values)
    pad = (high - low) * 0.05 or abs(high) * 0.05 or 1.0
    return low - pad, high + pad


def short(value: float) -> str:
    return f"{value:.4g}"


def line_chart(title: str, points: list[tuple[float, float]], x_label: str, width: int = 340, height: int = 190) -> str:
    """An inline-SVG line chart of (x, y) points with its value ranges on the axes."""
    left, right, top, bottom = 52, 10, 22, 30
    xs, ys = [p[0] for p in points], [p[1] for p in points]
    (x0, x1), (y0, y1) = axis_range(xs), axis_range(ys)

    def sx(v: float) -> float:
        return left + (width - left - right) * (v - x0) / (x1 - x0)

    def sy(v: float) -> float:
        return height - bottom - (height - top - bottom) * (v - y0) / (y1 - y0)

    path = " ".join(f"{sx(x):.1f},{sy(y):.1f}" for x, y in points)
    parts = [
        f'<svg width="{width}" height="{height}" role="img" aria-label="{escape(title)}">',
        f'<text x="{left}" y="14" font-weight="600">{escape(title)}</text>',
        f'<rect x="{left}" y="{top}" width="{width - left - right}" height="{height - top - bottom}" '
        'fill="none" stroke="#d8dde6"/>',
        f'<text x="{left - 4}" y="{top + 9}" text-anchor="end">{short(max(ys))}</text>',
        f'<text x="{left}" y="{height - bottom + 13}">{short(min(xs))}</text>',
        f'<text x="{(left + width - right) / 2:.0f}" y="{height - 4}" text-anchor="middle">{escape(x_label)}</text>',
        f'<polyline points="{path}" fill="none" stroke="#1f5fbf" stroke-width="1.5"/>',
    ]
    if min(ys) < max(ys):
        parts.append(f'<text x="{left - 4}" y="{height - bottom}" text-anchor="end">{short(min(ys))}</text>')
    if min(xs) < max(xs):
        parts.append(f'<text x="{width - right}" y="{height - bottom + 13}" text-anchor="end">{short(max(xs))}</text>')
    if len(points) <= 30:
        parts += [f'<circle cx="{sx(x):.1f}" cy="{sy(y):.1f}" r="2.5" fill="#1f5fbf"/>' for x, y in points]
    return "".join(parts) + "</svg>"
