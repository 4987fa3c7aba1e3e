"""PNG plots embedded in the model card, drawn on matplotlib's Agg canvas (no display, no pyplot state).

* ``interaction_f1.png``: F1 of the single-model baseline and of MMoE on each interaction subset of the test
  split (grouped bars).
* ``router_weights.png``: the router's mean weight on each expert, per interaction category (stacked bars:
  a good router puts most weight on the matching expert).

Each plot is skipped when ``eval_results.json`` lacks its data.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .formatting import ordered_categories

INTERACTION_F1_PLOT = "interaction_f1.png"
ROUTER_WEIGHTS_PLOT = "router_weights.png"
PLOT_FILES: tuple[str, ...] = (INTERACTION_F1_PLOT, ROUTER_WEIGHTS_PLOT)

_COLORS = ("#4C72B0", "#DD8452", "#55A868", "#C44E52", "#8172B3", "#937860")
_DPI = 120


def _figure() -> tuple[Any, Any]:
    """A figure with one axes, drawn by the Agg canvas directly: no pyplot, no global backend change."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6.4, 3.8))
    FigureCanvasAgg(fig)
    return fig, fig.subplots()


def _number(block: Any, key: str) -> float | None:
    value = block.get(key) if isinstance(block, Mapping) else None
    return float(value) if isinstance(value, (int, float)) else None


def plot_interaction_f1(eval_results: Mapping[str, Any], path: str | Path) -> bool:
    """Grouped bars of per-interaction F1, baseline vs MMoE (error bars when ``f1_std`` is present).

    Returns ``False`` (and writes nothing) when ``by_interaction`` holds no F1 value.
    """
    by_interaction = eval_results.get("by_interaction") or {}
    systems = [(name, by_interaction.get(name) or {}) for name in ("baseline", "mmoe")]
    systems = [(name, blocks) for name, blocks in systems if blocks]
    categories = ordered_categories(*(blocks for _, blocks in systems))
    categories = [c for c in categories if any(_number(b.get(c), "f1") is not None for _, b in systems)]
    if not categories:
        return False
    fig, ax = _figure()
    width = 0.8 / len(systems)
    counts = (eval_results.get("interaction_counts") or {}).get(eval_results.get("split")) or {}
    for i, (name, blocks) in enumerate(systems):
        offset = (i - (len(systems) - 1) / 2) * width
        present = [(j, blocks.get(c)) for j, c in enumerate(categories) if _number(blocks.get(c), "f1") is not None]
        if not present:
            continue
        stds = [_number(block, "f1_std") or 0.0 for _, block in present]
        bars = ax.bar(
            [j + offset for j, _ in present],
            [_number(block, "f1") for _, block in present],
            width,
            yerr=stds if any(stds) else None,
            capsize=3,
            label="Baseline" if name == "baseline" else "MMoE",
            color=_COLORS[i],
        )
        ax.bar_label(bars, fmt="%.2f", fontsize=8, padding=2)
    labels = [f"{c}\n(n={counts[c]})" if c in counts else c for c in categories]
    ax.set_xticks(range(len(categories)), labels)
    ax.set_xlim(-0.6, len(categories) - 0.4)
    ax.set_ylim(0, 1.1)
    ax.set_ylabel("F1")
    ax.set_title(f"F1 per interaction type ({eval_results.get('split') or 'test'} split)")
    ax.legend(loc="upper right", fontsize=8)
    ax.spines[["top", "right"]].set_visible(False)
    fig.tight_layout()
    fig.savefig(path, dpi=_DPI)
    return True


def plot_router_weights(eval_results: Mapping[str, Any], path: str | Path, experts: list[str] | None = None) -> bool:
    """Stacked bars: mean router weight of each expert, one bar per interaction category.

    Returns ``False`` (and writes nothing) when ``router_weights_by_interaction`` is absent or empty.
    """
    weights = eval_results.get("router_weights_by_interaction") or {}
    categories = [c for c in ordered_categories(weights) if weights.get(c)]
    if not categories:
        return False
    names = list(dict.fromkeys(list(experts or []) + ordered_categories(*(weights[c] for c in categories))))
    names = [e for e in names if any(e in weights[c] for c in categories)]
    fig, ax = _figure()
    bottoms = [0.0] * len(categories)
    for i, expert in enumerate(names):
        values = [float(weights[c].get(expert, 0.0)) for c in categories]
        bars = ax.bar(
            range(len(categories)),
            values,
            0.6,
            bottom=bottoms,
            label=f"{expert} expert",
            color=_COLORS[i % len(_COLORS)],
        )
        ax.bar_label(
            bars,
            labels=[f"{v:.2f}" if v >= 0.06 else "" for v in values],
            label_type="center",
            fontsize=8,
            color="white",
        )
        bottoms = [b + v for b, v in zip(bottoms, values)]
    ax.set_xticks(range(len(categories)), categories)
    ax.set_xlabel("interaction type of the test example")
    ax.set_ylabel("mean router weight")
    ax.set_ylim(0, max(1.0, max(bottoms)) * 1.02)
    ax.set_title("Router weights per interaction type")
    ax.legend(loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize=8)
    ax.spines[["top", "right"]].set_visible(False)
    fig.tight_layout()
    fig.savefig(path, dpi=_DPI)
    return True


def write_plots(eval_results: Mapping[str, Any], output_dir: str | Path, experts: list[str] | None = None) -> list[str]:
    """Draw every plot whose data exists into ``output_dir``; return the file names written.

    Plots of an earlier run that no longer have data are removed, so the folder never shows stale figures.
    """
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for name, draw in (
        (INTERACTION_F1_PLOT, lambda p: plot_interaction_f1(eval_results, p)),
        (ROUTER_WEIGHTS_PLOT, lambda p: plot_router_weights(eval_results, p, experts)),
    ):
        path = output_dir / name
        if draw(path):
            written.append(name)
        elif path.exists():
            path.unlink()
    return written
