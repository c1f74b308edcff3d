"""The report's plots: matplotlib (Agg backend) rendered to inline SVG.

SVG text goes straight into the HTML (glyphs as paths, no fonts, no files),
so the report stays one self-contained file that opens offline.
"""
from __future__ import annotations

import io
import math
import re
from typing import Dict, List, Optional, Sequence, Tuple

import matplotlib
matplotlib.use("Agg")
from matplotlib import pyplot as plt  # noqa: E402  pylint: disable=g-import-not-at-top,wrong-import-position

plt.rcParams.update({"svg.fonttype": "path", "font.size": 9,
                     "axes.spines.top": False, "axes.spines.right": False})

COLORS = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b"]


def to_svg(fig, title: str) -> str:
  """The figure as an <svg> element (no XML prolog, a <title> for screen readers)."""
  buf = io.StringIO()
  fig.savefig(buf, format="svg", bbox_inches="tight")
  plt.close(fig)
  svg = buf.getvalue()
  svg = svg[svg.index("<svg"):]
  svg = re.sub(r"<svg ", f'<svg role="img" aria-label="{_attr(title)}" ', svg, count=1)
  return svg


def _attr(text: str) -> str:
  return (text.replace("&", "&amp;").replace('"', "&quot;")
          .replace("<", "&lt;").replace(">", "&gt;"))


def loss_plot(series: Dict[str, List[Tuple[int, float]]], title: str) -> str:
  """Loss per epoch: {label (train / validation): [(epoch, value)]}."""
  fig, ax = plt.subplots(figsize=(5.2, 2.6))
  for i, (label, points) in enumerate(sorted(series.items())):
    xs = [p[0] + 1 for p in points]  # epochs counted from 1, as Keras prints them
    ax.plot(xs, [p[1] for p in points], marker="o", ms=3, color=COLORS[i % 6],
            label=label)
  ax.set_xlabel("epoch")
  ax.set_ylabel("loss")
  ax.set_title(title)
  if max((len(p) for p in series.values()), default=0) <= 12:
    ax.set_xticks(sorted({p[0] + 1 for pts in series.values() for p in pts}))
  ax.legend(frameon=False)
  ax.grid(alpha=0.3)
  return to_svg(fig, title)


def history_plot(panels: List[Dict], labels: Sequence[str], title: str) -> str:
  """One panel per metric family, one point per run.

  panels: [{"title", "ylabel", "lines": {name: [value or nan per run]},
  "pushed": {run index: "v<version>"}, "main": name of the line the pushes
  mark}]; labels: one x tick label per run.
  """
  n = len(labels)
  fig, axes = plt.subplots(len(panels), 1, figsize=(7.5, 2.4 * len(panels)),
                           sharex=True, squeeze=False)
  xs = list(range(1, n + 1))
  for ax, panel in zip(axes[:, 0], panels):
    for i, (name, values) in enumerate(panel["lines"].items()):
      main = name == panel.get("main")
      ax.plot(xs, values, marker="o" if main else ".", ms=4 if main else 3,
              lw=1.6 if main else 1.0, ls="-" if main else "--",
              color=COLORS[i % 6], label=name)
    main_values = panel["lines"].get(panel.get("main"), [])
    for run_index, text in sorted(panel.get("pushed", {}).items()):
      y = main_values[run_index] if run_index < len(main_values) else math.nan
      if y is None or (isinstance(y, float) and math.isnan(y)):
        continue
      ax.plot([run_index + 1], [y], marker="*", ms=12, color="#d4a017",
              markeredgecolor="black", ls="none", zorder=5)
      ax.annotate(text, (run_index + 1, y), textcoords="offset points",
                  xytext=(0, 8), ha="center", fontsize=8)
    ax.set_title(panel["title"], loc="left")
    ax.set_ylabel(panel.get("ylabel", ""))
    ax.grid(alpha=0.3)
    ax.legend(frameon=False, fontsize=8, loc="best")
  ax = axes[-1, 0]
  ax.set_xticks(xs)
  ax.set_xticklabels(labels, rotation=30 if n > 4 else 0, ha="right" if n > 4 else "center")
  ax.set_xlabel("run (★ = a version was pushed)")
  ax.set_xlim(0.5, n + 0.5)
  return to_svg(fig, title)


def histograms_plot(features: Dict[str, Dict[str, Dict]], splits: Sequence[str],
                    title: str) -> Optional[str]:
  """Numeric features' histograms, splits overlaid as shares of their rows."""
  names = [n for n, per in sorted(features.items())
           if any(per.get(s, {}).get("histogram") for s in splits)]
  if not names:
    return None
  cols = 3
  rows = math.ceil(len(names) / cols)
  fig, axes = plt.subplots(rows, cols, figsize=(7.5, 1.9 * rows), squeeze=False)
  for ax, name in zip(axes.flat, names):
    for i, split in enumerate(splits):
      buckets = features[name].get(split, {}).get("histogram") or []
      total = sum(b[2] for b in buckets) or 1.0
      lows = [b[0] for b in buckets]
      widths = [max(b[1] - b[0], 1e-9) for b in buckets]
      ax.bar(lows, [b[2] / total for b in buckets], width=widths, align="edge",
             alpha=0.5, color=COLORS[i % 6], label=split)
    ax.set_title(name, fontsize=8)
    ax.tick_params(labelsize=7)
  for ax in list(axes.flat)[len(names):]:
    ax.axis("off")
  # A fixed corner: "best" checks every bar (slow on a busy machine;
  # matplotlib warns when it took over a second).
  axes.flat[0].legend(frameon=False, fontsize=7, loc="upper right")
  fig.tight_layout()
  return to_svg(fig, title)
