"""PNG plots embedded in the model card, drawn on matplotlib's Agg canvas (no display, no pyplot state).

* ``interaction_f1.png``: F1 of the single-model baseline and of the run's mixture (MMoE or I2MoE) on each
  interaction subset of the test split (grouped bars).
* ``router_weights.png``: the router's mean weight on each expert, per interaction category (stacked bars:
  a good router puts most weight on the matching expert). MMoE runs.
* ``expert_weights.png``: I2MoE's mean per-example expert weight, over all evaluation examples and per gold
  interaction type (per categorized type on data without gold types); grouped bars, one per expert. I2MoE runs.

Each plot is skipped when ``eval_results.json`` lacks its data.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .formatting import ALL_EXAMPLES, expert_weight_groups, method_label, ordered_categories

INTERACTION_F1_PLOT = "interaction_f1.png"
ROUTER_WEIGHTS_PLOT = "router_weights.png"
EXPERT_WEIGHTS_PLOT = "expert_weights.png"
PLOT_FILES: tuple[str, ...] = (INTERACTION_F1_PLOT, ROUTER_WEIGHTS_PLOT, EXPERT_WEIGHTS_PLOT)

_COLORS = ("#4C72B0", "#DD8452", "#55A868", "#C44E52", "#8172B3", "#937860")
_DPI = 120


def _figure() -> tuple[Any, Any]:
    """A figure with one axes, drawn by the Agg canvas directly: no pyplot, no global backend change."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6.4, 3.8))
    FigureCanvasAgg(fig)
    return fig, fig.subplots()


def _save(fig: Any, ax: Any, path: str | Path) -> None:
    """The plots' common finish: no top/right frame, tight layout, PNG at :data:`_DPI`."""
    ax.spines[["top", "right"]].set_visible(False)
    fig.tight_layout()
    fig.savefig(path, dpi=_DPI)


def _number(block: Any, key: str) -> float | None:
    value = block.get(key) if isinstance(block, Mapping) else None
    return float(value) if isinstance(value, (int, float)) else None


def plot_interaction_f1(eval_results: Mapping[str, Any], path: str | Path, mixture_label: str | None = None) -> bool:
    """Grouped bars of per-interaction F1, baseline vs the run's mixture (error bars when ``f1_std`` is present).

    ``mixture_label`` names the mixture in the legend (default: ``"MMoE"`` or ``"I2MoE"`` from the results).
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
            label="Baseline" if name == "baseline" else mixture_label or method_label(eval_results),
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
    _save(fig, ax, path)
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
    _save(fig, ax, path)
    return True


def plot_expert_weights(
    eval_results: Mapping[str, Any], path: str | Path, experts: list[str] | None = None
) -> bool:
    """Grouped bars of I2MoE's mean expert weights: one group for all evaluation examples, then one per gold
    interaction type (per categorized type without gold types), one bar per expert; a dashed line marks the
    uniform weight ``1 / E``. The numbers are :func:`~mmoe.hub_cards.formatting.expert_weight_groups`', as in the
    card's table.

    Returns ``False`` (and writes nothing) when ``interpretation`` holds no weights.
    """
    weights = expert_weight_groups(eval_results, experts)
    if not weights:
        return False
    groups, names, counts = list(weights["groups"]), weights["experts"], weights["counts"]
    fig, ax = _figure()
    width = 0.8 / len(names)
    top = 0.0
    for i, expert in enumerate(names):
        offset = (i - (len(names) - 1) / 2) * width
        present = [(j, _number(weights["groups"][g], expert)) for j, g in enumerate(groups)]
        present = [(j, v) for j, v in present if v is not None]
        if not present:
            continue
        bars = ax.bar([j + offset for j, _ in present], [v for _, v in present], width, label=expert,
                      color=_COLORS[i % len(_COLORS)])
        ax.bar_label(bars, fmt="%.2f", fontsize=6, padding=1, rotation=90)
        top = max(top, *(v for _, v in present))
    ax.axhline(1 / len(names), color="0.4", linestyle="--", linewidth=0.8, label=f"uniform (1/{len(names)})")
    split = eval_results.get("split") or "test"
    labels = []
    for group in groups:
        name = f"all {split}" if group == ALL_EXAMPLES else group
        labels.append(f"{name}\n(n={counts[group]:g})" if group in counts else name)
    ax.set_xticks(range(len(groups)), labels, fontsize=8)
    ax.set_xlim(-0.6, len(groups) - 0.4)
    ax.set_ylim(0, max(top, 1 / len(names)) * 1.3)
    ax.set_ylabel("mean expert weight")
    by = {"gold": "gold interaction type", "categorized": "categorized interaction type"}.get(weights["grouping"])
    ax.set_title("I2MoE expert weights" + (f" per {by}" if by else "") + f" ({split} split)", fontsize=10)
    ax.legend(loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize=7)
    _save(fig, ax, path)
    return True


def write_plots(
    eval_results: Mapping[str, Any],
    output_dir: str | Path,
    experts: list[str] | None = None,
    mixture_label: str | None = None,
) -> list[str]:
    """Draw every plot whose data exists into ``output_dir``; return the file names written.

    ``mixture_label`` names the run's mixture in the figures (default: from ``eval_results["method"]``). Plots of an
    earlier run that no longer have data are removed, so the folder never shows stale figures.
    """
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for name, draw in (
        (INTERACTION_F1_PLOT, lambda p: plot_interaction_f1(eval_results, p, mixture_label)),
        (ROUTER_WEIGHTS_PLOT, lambda p: plot_router_weights(eval_results, p, experts)),
        (EXPERT_WEIGHTS_PLOT, lambda p: plot_expert_weights(eval_results, p, experts)),
    ):
        path = output_dir / name
        if draw(path):
            written.append(name)
        elif path.exists():
            path.unlink()
    return written
