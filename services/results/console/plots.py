"""Plotly figures (as plain JSON-able dicts) for the console's pages.

plotly.js itself comes from the plotly wheel and is served by the console;
figures travel in the page as JSON (`<script type="application/json">`, which
Jinja's `tojson` escapes), never as inline script. Free text in hover labels is
HTML-escaped here, since plotly renders a subset of HTML in labels.
"""

from __future__ import annotations

import html
from datetime import datetime
from typing import Any

from services.results.console.series import RISK_LABELS, RiskSeries, Series
from shared.domain.findings import EmotionMoment

INK, BAND, LINE, ALERT = "#1b1f24", "rgba(11, 92, 173, 0.15)", "#0b5cad", "#b00020"
RISK_COLOURS = ["#1a7f37", "#b35900", "#b00020"]  # low, moderate, high (>= 4.5:1 on white)


def _t(values: list[datetime]) -> list[str]:
    return [v.strftime("%Y-%m-%d %H:%M:%S") for v in values]  # to the second: two check-ins may share a minute


def _layout(title: str, y_title: str, zone_name: str, **extra: Any) -> dict[str, Any]:
    return {
        "title": {"text": html.escape(title), "font": {"size": 15, "color": INK}},
        "xaxis": {"title": {"text": f"Check-in time ({html.escape(zone_name)})"}, "type": "date"},
        "yaxis": {"title": {"text": html.escape(y_title)}},
        "margin": {"l": 60, "r": 20, "t": 40, "b": 50}, "height": 300, "showlegend": True,
        "legend": {"orientation": "h", "y": -0.3}, "font": {"color": INK},
        **extra,
    }


def risk_figure(series: RiskSeries, zone_name: str) -> dict[str, Any]:
    hover = [f"{w}<br>factors: {html.escape(f)}<br>{html.escape(j)}"
             for w, f, j in zip(series.words, series.factors, series.job_ids)]
    trace = {"type": "scatter", "mode": "lines+markers", "name": "risk level", "x": _t(series.times),
             "y": series.levels, "text": hover, "hovertemplate": "%{x}<br>%{text}<extra></extra>",
             "line": {"color": "#6b7580", "width": 1},
             "marker": {"size": 11, "color": [RISK_COLOURS[v] for v in series.levels]}}
    layout = _layout("Risk level per check-in", "risk level", zone_name, showlegend=False)
    layout["yaxis"] = {**layout["yaxis"], "tickvals": [0, 1, 2], "ticktext": RISK_LABELS, "range": [-0.4, 2.4]}
    return {"data": [trace], "layout": layout}


def marker_figure(series: Series, zone_name: str) -> dict[str, Any]:
    unit = html.escape(series.unit)
    data: list[dict[str, Any]] = []
    if series.band_times:
        data.append({"type": "scatter", "mode": "lines", "x": _t(series.band_times), "y": series.band_low,
                     "line": {"width": 0}, "hoverinfo": "skip", "showlegend": False, "name": "baseline low"})
        data.append({"type": "scatter", "mode": "lines", "x": _t(series.band_times), "y": series.band_high,
                     "line": {"width": 0}, "fill": "tonexty", "fillcolor": BAND, "hoverinfo": "skip",
                     "name": "usual range (baseline ±1 SD)"})
    data.append({"type": "scatter", "mode": "lines+markers", "name": html.escape(series.label), "x": _t(series.times),
                 "y": series.values, "line": {"color": LINE}, "marker": {"size": 8, "color": LINE},
                 "hovertemplate": f"%{{x}}<br>%{{y:.3g}} {unit}<extra></extra>"})
    if series.notable_times:
        data.append({"type": "scatter", "mode": "markers", "name": "notable change", "x": _t(series.notable_times),
                     "y": series.notable_values, "hovertemplate": f"%{{x}}<br>%{{y:.3g}} {unit} (notable)<extra></extra>",
                     "marker": {"size": 13, "symbol": "diamond-open", "color": ALERT, "line": {"width": 2}}})
    return {"data": data, "layout": _layout(series.label, f"{series.label} ({series.unit})", zone_name)}


NO_READING = "no reading"  # a face frame the emotion networks did not read (vision's `no_reading` says why)


def emotion_timeline_figure(timeline: list[EmotionMoment], labels: list[str]) -> dict[str, Any]:
    def label(point: EmotionMoment) -> str:
        return point.emotion or NO_READING

    def hover(point: EmotionMoment) -> str:
        if not point.emotion:
            return html.escape(point.no_reading or "the networks gave no reading")
        return f"confidence {float(point.confidence or 0):.2f}"

    shown = {label(p) for p in timeline}
    order = [o for o in (labels or sorted(shown - {NO_READING})) if o in shown or labels] + (
        [NO_READING] if NO_READING in shown else [])
    trace = {"type": "scatter", "mode": "markers", "name": "top emotion",
             "x": [p.t for p in timeline], "y": [html.escape(label(p)) for p in timeline],
             "text": [hover(p) for p in timeline],
             "hovertemplate": "%{x:.2f} s: %{y}<br>%{text}<extra></extra>",
             "marker": {"size": [6 + 12 * float(p.confidence or 0) if p.emotion else 6 for p in timeline],
                        "color": [LINE if p.emotion else "#6b7580" for p in timeline]}}
    return {"data": [trace], "layout": {
        "title": {"text": "Facial emotion over the recording", "font": {"size": 15}},
        "xaxis": {"title": {"text": "seconds into the recording"}},
        "yaxis": {"title": {"text": "top emotion"}, "type": "category",
                  "categoryarray": [html.escape(o) for o in order]},
        "margin": {"l": 80, "r": 20, "t": 40, "b": 50}, "height": 280, "showlegend": False, "font": {"color": INK}}}


def expressivity_figure(blendshape_std: dict[str, float]) -> dict[str, Any]:
    names = sorted(blendshape_std, key=lambda k: -float(blendshape_std[k]))
    trace = {"type": "bar", "name": "variability", "x": [html.escape(n) for n in names],
             "y": [float(blendshape_std[n]) for n in names], "marker": {"color": LINE},
             "hovertemplate": "%{x}: %{y:.3f}<extra></extra>"}
    return {"data": [trace], "layout": {
        "title": {"text": "Expressivity: movement of each facial expression", "font": {"size": 15}},
        "xaxis": {"title": {"text": "MediaPipe blendshape"}},
        "yaxis": {"title": {"text": "standard deviation over time (0-1)"}},
        "margin": {"l": 60, "r": 20, "t": 40, "b": 90}, "height": 300, "showlegend": False, "font": {"color": INK}}}
