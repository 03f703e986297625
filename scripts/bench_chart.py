#!/usr/bin/env python3
"""Draws latency (p50, p99) against delivered rate from the ramp lines of a bench.sh result
file, one curve pair per server, as a self-contained SVG (no plotting library).

    python3 scripts/bench_chart.py bench/results/<stamp>.jsonl bench/results/<stamp>.svg

Each ramp step is a point; a step that did not hold (p99 above the limit, or anything lost)
is drawn hollow. The dotted line is the ramp's p99 limit.
"""
import json
import math
import sys
from html import escape

WIDTH, HEIGHT = 860, 520
LEFT, RIGHT, TOP, BOTTOM = 80, 200, 80, 60
COLORS = {
    "product": "#1f6fb4",
    "node": "#c9302c",
    "node-adapter": "#e08a1e",
    "socketioxide": "#7b4fb0",
    "socketioxide-tuned": "#b08fd6",
    "floor": "#2e9e44",
}
ORDER = ["product", "node", "node-adapter", "socketioxide", "socketioxide-tuned", "floor"]
BUSY = 0.9


def load_ramps(path):
    """The ramp reports of a .jsonl result file, by server name."""
    ramps = {}
    with open(path, encoding="utf-8") as lines:
        for line in lines:
            line = line.strip()
            if not line:
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                continue
            if row.get("scenario") == "ramp" and row.get("steps"):
                ramps[row.get("server", "server")] = row
    return ramps


def nice_step(span, ticks=6):
    """A round tick spacing (1, 2 or 5 times a power of ten) giving about `ticks` ticks."""
    raw = span / max(ticks, 1)
    power = 10 ** math.floor(math.log10(raw)) if raw > 0 else 1
    for factor in (1, 2, 5, 10):
        if raw <= factor * power:
            return factor * power
    return 10 * power


def rate_label(value):
    """Deliveries per second, rounded for a label: 119825 -> 120k."""
    return f"{value / 1000:.0f}k" if value >= 1000 else f"{value:.0f}"


def ms_label(value):
    return f"{value:g} ms"


class Plot:
    """Maps data to the plot area: x linear in deliveries/s, y logarithmic in ms."""

    def __init__(self, x_max, y_min, y_max):
        self.x_max = x_max
        self.y_lo = math.floor(math.log10(y_min))
        self.y_hi = math.ceil(math.log10(y_max))
        if self.y_hi <= self.y_lo:
            self.y_hi = self.y_lo + 1
        self.w = WIDTH - LEFT - RIGHT
        self.h = HEIGHT - TOP - BOTTOM

    def x(self, value):
        return LEFT + self.w * value / self.x_max

    def y(self, ms):
        ms = max(ms, 10**self.y_lo)
        return TOP + self.h * (self.y_hi - math.log10(ms)) / (self.y_hi - self.y_lo)


def axes(plot, out):
    """Frame, grid, ticks and axis titles."""
    out.append(
        f'<rect x="{LEFT}" y="{TOP}" width="{plot.w}" height="{plot.h}" '
        'fill="none" stroke="#888"/>'
    )
    step = nice_step(plot.x_max)
    tick = 0.0
    while tick <= plot.x_max + 1e-9:
        x = plot.x(tick)
        out.append(f'<line x1="{x:.1f}" y1="{TOP}" x2="{x:.1f}" y2="{TOP + plot.h}" stroke="#eee"/>')
        out.append(
            f'<text x="{x:.1f}" y="{TOP + plot.h + 18}" text-anchor="middle">{rate_label(tick)}</text>'
        )
        tick += step
    for power in range(plot.y_lo, plot.y_hi + 1):
        for factor in (1, 2, 5):
            ms = factor * 10**power
            if ms > 10**plot.y_hi:
                break
            y = plot.y(ms)
            out.append(
                f'<line x1="{LEFT}" y1="{y:.1f}" x2="{LEFT + plot.w}" y2="{y:.1f}" '
                f'stroke="{"#ddd" if factor == 1 else "#f3f3f3"}"/>'
            )
            out.append(f'<text x="{LEFT - 6}" y="{y + 4:.1f}" text-anchor="end">{ms_label(ms)}</text>')
    out.append(
        f'<text x="{LEFT + plot.w / 2}" y="{HEIGHT - 15}" text-anchor="middle">'
        "deliveries per second (each ramp step)</text>"
    )
    out.append(
        f'<text x="18" y="{TOP + plot.h / 2}" text-anchor="middle" '
        f'transform="rotate(-90 18 {TOP + plot.h / 2})">latency (log scale)</text>'
    )


def busy_from(plot, steps, out):
    """Shades the rates from the first step at which the generator (one thread) used 90% or
    more of a core: latencies there include the generator's own queueing."""
    busy = [s["deliveries_per_sec"] for s in steps if s.get("generator_busy", 0) >= BUSY]
    if not busy:
        return
    x = plot.x(min(busy)) - 8
    out.append(
        f'<rect x="{x:.1f}" y="{TOP}" width="{LEFT + plot.w - x:.1f}" height="{plot.h}" fill="#f2f2f2"/>'
    )
    out.append(
        f'<text x="{x + 4:.1f}" y="{TOP + plot.h - 8}" fill="#777" font-size="11">'
        f"generator at {BUSY:.0%}+ of a core</text>"
    )


def marker(x, y, color, held, square):
    fill = color if held else "white"
    if square:
        return (
            f'<rect x="{x - 4:.1f}" y="{y - 4:.1f}" width="8" height="8" fill="{fill}" '
            f'stroke="{color}" stroke-width="1.5"/>'
        )
    return f'<circle cx="{x:.1f}" cy="{y:.1f}" r="4" fill="{fill}" stroke="{color}" stroke-width="1.5"/>'


def curves(plot, ramps, out):
    """For each server, a solid p50 line with circles and a dashed p99 line with squares."""
    for server in sorted(ramps, key=lambda s: ORDER.index(s) if s in ORDER else len(ORDER)):
        color = COLORS.get(server, "#555")
        steps = ramps[server]["steps"]
        for key, dash, square in (("latency_ms_p50", "", False), ("latency_ms_p99", "6 4", True)):
            points = [(plot.x(s["deliveries_per_sec"]), plot.y(s[key]), s.get("held", False)) for s in steps]
            path = " ".join(f"{x:.1f},{y:.1f}" for x, y, _ in points)
            dashing = f' stroke-dasharray="{dash}"' if dash else ""
            out.append(f'<polyline points="{path}" fill="none" stroke="{color}" stroke-width="2"{dashing}/>')
            out.extend(marker(x, y, color, held, square) for x, y, held in points)


def legend(ramps, limit, out):
    x = WIDTH - RIGHT + 20
    y = TOP + 10
    for server in [s for s in ORDER if s in ramps] + [s for s in ramps if s not in ORDER]:
        color = COLORS.get(server, "#555")
        best = ramps[server].get("best_deliveries_per_sec")
        out.append(f'<text x="{x}" y="{y}" font-weight="bold" fill="{color}">{escape(server)}</text>')
        out.append(f'<line x1="{x}" y1="{y + 12}" x2="{x + 28}" y2="{y + 12}" stroke="{color}" stroke-width="2"/>')
        out.append(f'<text x="{x + 34}" y="{y + 16}">p50</text>')
        out.append(
            f'<line x1="{x}" y1="{y + 28}" x2="{x + 28}" y2="{y + 28}" stroke="{color}" '
            'stroke-width="2" stroke-dasharray="6 4"/>'
        )
        out.append(f'<text x="{x + 34}" y="{y + 32}">p99</text>')
        held = "none held" if best is None else f"best held: {rate_label(best)}/s"
        out.append(f'<text x="{x}" y="{y + 50}" font-size="11">{held}</text>')
        y += 78
    out.append(marker(x + 4, y, "#555", False, False))
    out.append(f'<text x="{x + 14}" y="{y + 4}" font-size="11">step not held</text>')
    out.append(
        f'<line x1="{x}" y1="{y + 20}" x2="{x + 28}" y2="{y + 20}" stroke="#999" stroke-dasharray="2 3"/>'
    )
    out.append(f'<text x="{x + 34}" y="{y + 24}" font-size="11">p99 limit {limit:g} ms</text>')


def render(ramps, subtitle):
    steps = [s for ramp in ramps.values() for s in ramp["steps"]]
    limit = max(r.get("p99_limit_ms", 50.0) for r in ramps.values())
    x_max = max(s["deliveries_per_sec"] for s in steps) * 1.08 or 1.0
    lows = [s["latency_ms_p50"] for s in steps if s["latency_ms_p50"] > 0]
    y_min = min(lows + [limit]) if lows else 0.1
    y_max = max([s["latency_ms_p99"] for s in steps] + [limit])
    plot = Plot(x_max, y_min, y_max)
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" '
        f'viewBox="0 0 {WIDTH} {HEIGHT}" font-family="sans-serif" font-size="12">',
        f'<rect width="{WIDTH}" height="{HEIGHT}" fill="white"/>',
        f'<text x="{LEFT}" y="28" font-size="16" font-weight="bold">'
        "Latency against delivered rate (chat-bench fanout --ramp)</text>",
    ]
    for number, line in enumerate(subtitle):
        out.append(f'<text x="{LEFT}" y="{46 + 14 * number}" fill="#555">{escape(line)}</text>')
    busy_from(plot, steps, out)
    axes(plot, out)
    y = plot.y(limit)
    out.append(
        f'<line x1="{LEFT}" y1="{y:.1f}" x2="{LEFT + plot.w}" y2="{y:.1f}" stroke="#999" stroke-dasharray="2 3"/>'
    )
    curves(plot, ramps, out)
    legend(ramps, limit, out)
    out.append("</svg>")
    return "\n".join(out) + "\n"


def subtitle_of(ramps):
    any_ramp = next(iter(ramps.values()))
    commit = any_ramp.get("commit", "?")
    date = any_ramp.get("date", "")
    return [
        f"{any_ramp['clients']} clients, {any_ramp['rooms']} rooms, {any_ramp['senders']} senders, "
        f"{any_ramp['step_send_seconds']:g} s per step; commit {commit}, {date}",
        "server, Redis and the generator share one 2-core machine",
    ]


def main(argv):
    if len(argv) != 3:
        print(__doc__.strip(), file=sys.stderr)
        return 2
    ramps = load_ramps(argv[1])
    if not ramps:
        print(f"bench_chart: no ramp results in {argv[1]}", file=sys.stderr)
        return 1
    with open(argv[2], "w", encoding="utf-8") as svg:
        svg.write(render(ramps, subtitle_of(ramps)))
    print(f"bench_chart: wrote {argv[2]} ({', '.join(sorted(ramps))})", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
