"""Plotly figures for the explorer (weights as bars or a ternary plot, batch distributions)."""

from __future__ import annotations

from typing import Sequence

import numpy as np
import plotly.graph_objects as go

COLORS = ["#4C78A8", "#F58518", "#54A24B", "#E45756", "#72B7B2", "#EECA3B", "#B279A2", "#FF9DA6"]


def weight_bars(series: dict[str, Sequence[float]], names: Sequence[str]) -> go.Figure:
    """Grouped bars: one group per objective, one bar per weight vector (inferred, override...)."""
    fig = go.Figure()
    for i, (label, w) in enumerate(series.items()):
        fig.add_bar(name=label, x=list(names), y=[float(v) for v in w],
                    marker_color=COLORS[i % len(COLORS)],
                    text=[f"{float(v):.2f}" for v in w], textposition="outside")
    fig.update_layout(barmode="group", yaxis=dict(range=[0, 1.1], title="weight"),
                      height=300, margin=dict(l=10, r=10, t=30, b=10), legend=dict(orientation="h"))
    return fig


def weight_ternary(series: dict[str, Sequence[float]], names: Sequence[str]) -> go.Figure:
    """The K = 3 simplex as a triangle; each weight vector is a point."""
    a, b, c = names
    fig = go.Figure()
    symbols = ["circle", "diamond", "square", "x", "triangle-up"]
    for i, (label, w) in enumerate(series.items()):
        # no text next to the points: at a corner it ran into the corner's objective name; a legend says which is which
        fig.add_trace(go.Scatterternary(
            a=[float(w[0])], b=[float(w[1])], c=[float(w[2])], mode="markers", name=label,
            hovertemplate=f"{label}<br>{a}=%{{a:.2f}}<br>{b}=%{{b:.2f}}<br>{c}=%{{c:.2f}}<extra></extra>",
            marker=dict(size=14, color=COLORS[i % len(COLORS)], symbol=symbols[i % len(symbols)],
                        line=dict(width=1, color="white"))))
    corner = dict(font=dict(size=13))
    fig.update_layout(ternary=dict(sum=1, aaxis=dict(title=dict(text=f"{a} = 1", **corner)),
                                   baxis=dict(title=dict(text=f"{b} = 1", **corner)),
                                   caxis=dict(title=dict(text=f"{c} = 1", **corner))),
                      height=400, margin=dict(l=70, r=70, t=50, b=40), showlegend=True,
                      legend=dict(orientation="h", yanchor="top", y=-0.05, xanchor="center", x=0.5,
                                  title=dict(text="weights: ")))
    return fig


def weight_histograms(W: np.ndarray, names: Sequence[str]) -> go.Figure:
    fig = go.Figure()
    for k, n in enumerate(names):
        fig.add_histogram(x=np.asarray(W)[:, k], name=n, opacity=0.6, xbins=dict(start=0, end=1, size=0.05),
                          marker_color=COLORS[k % len(COLORS)])
    fig.update_layout(barmode="overlay", xaxis=dict(title="inferred weight", range=[0, 1]),
                      yaxis=dict(title="prompts"), height=320, margin=dict(l=10, r=10, t=30, b=10))
    return fig


def ternary_scatter(W: np.ndarray, names: Sequence[str], dominant: Sequence[str],
                    hover: Sequence[str] | None = None) -> go.Figure:
    W = np.asarray(W)
    a, b, c = names
    fig = go.Figure()
    for k, n in enumerate(names):
        idx = [i for i, d in enumerate(dominant) if d == n]
        if not idx:
            continue
        fig.add_trace(go.Scatterternary(
            a=W[idx, 0], b=W[idx, 1], c=W[idx, 2], mode="markers", name=f"dominant: {n}",
            text=[hover[i][:120] for i in idx] if hover is not None else None,
            marker=dict(size=7, color=COLORS[k % len(COLORS)], opacity=0.75)))
    fig.update_layout(ternary=dict(sum=1, aaxis=dict(title=a), baxis=dict(title=b), caxis=dict(title=c)),
                      height=440, margin=dict(l=50, r=50, t=40, b=50))
    return fig
