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
    for i, (label, w) in enumerate(series.items()):
        fig.add_trace(go.Scatterternary(a=[float(w[0])], b=[float(w[1])], c=[float(w[2])], mode="markers+text",
                                        name=label, text=[label], textposition="top center",
                                        marker=dict(size=14, color=COLORS[i % len(COLORS)])))
    fig.update_layout(ternary=dict(sum=1, aaxis=dict(title=a), baxis=dict(title=b), caxis=dict(title=c)),
                      height=380, margin=dict(l=50, r=50, t=40, b=50), showlegend=False)
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
