"""The report's figures, drawn like the paper's (PNG, matplotlib's Agg renderer, no pyplot state).

- training_curves.png: training (thin, dashed) and test (bold) error against iterations, one panel for
  the plain nets and one for the residual nets, colours by depth (Figures 4 and 6).
- layer_responses.png: std of each 3x3 layer's responses, in forward order and sorted by magnitude,
  plain nets dashed, residual nets solid (Figure 7).

Each curve is the mean over seeds.
"""

import textwrap
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import FuncFormatter, MaxNLocator

from resnet_repro import models
from resnet_repro.layout import LAYER_RESPONSES, TRAINING_CURVES
from resnet_repro.report.measured import Run, label, mean_curve, mean_responses, sort_key

DPI = 150
DATASET_TITLE = {"cifar10": "CIFAR-10", "imagefolder": "image folder"}

# Colour-blind friendly, distinct in print (Okabe-Ito, then tab10's extras).
PALETTE = ["#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#000000", "#F0E442",
           "#8c564b", "#7f7f7f", "#bcbd22", "#17becf"]


@dataclass(frozen=True)
class ReportFigure:
    file: str  # relative to the reports directory
    title: str


def colours(variants: list[str]) -> dict[str, str]:
    """One colour per depth, shared by plain-d and ResNet-d; other shortcut options get their own."""
    def key(variant: str) -> tuple:
        s = models.spec(variant)
        suffix = s.name[-2:] if s.name[-2:] in ("-a", "-b", "-c") else ""
        return s.depth, suffix, s.family == "preact"

    keys = sorted({key(v) for v in variants})
    return {v: PALETTE[keys.index(key(v)) % len(PALETTE)] for v in variants}


def _iterations(value: float, _position=None) -> str:
    return f"{value / 1000:g}k" if abs(value) >= 1000 else f"{value:g}"


def _new_figure(width: float, height: float) -> Figure:
    figure = Figure(figsize=(width, height), dpi=DPI, layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def _seeds_text(runs: dict[str, list[Run]]) -> str:
    counts = sorted({len(seed_runs) for seed_runs in runs.values()})
    if counts == [1]:
        return "1 seed"
    return f"mean over {'/'.join(map(str, counts))} seeds"


def _title(figure: Figure, title: str) -> None:
    # About 12 characters of 11 pt text per inch: wrap rather than run off a narrow figure.
    figure.suptitle(textwrap.fill(title, width=int(figure.get_figwidth() * 12)), fontsize=11)


def _save(figure: Figure, path: Path) -> None:
    figure.savefig(path, format="png", dpi=DPI, facecolor="white")


def training_curves(runs: dict[str, list[Run]], dataset: str, path: Path) -> ReportFigure:
    """Figures 4 and 6: error (%) against iterations, plain nets left, residual nets right."""
    palette = colours(list(runs))
    families = [("plain", "plain networks"), ("residual", "residual networks (ResNets)")]
    panels = [(title, sorted([v for v in runs if (models.spec(v).family == "plain") == (family == "plain")],
                             key=sort_key)) for family, title in families]
    panels = [(title, variants) for title, variants in panels if variants]
    held_out = "test" if next(iter(runs.values()))[0].split == "test" else "validation"
    figure = _new_figure(5.2 * len(panels) + 0.6, 4.4)
    axes = figure.subplots(1, len(panels), sharey=True, squeeze=False)[0]
    last_step = max((float(run.curve["step"].max()) for seed_runs in runs.values() for run in seed_runs
                     if len(run.curve["step"])), default=1.0)
    plotted: list[np.ndarray] = []
    for axis, (title, variants) in zip(axes, panels):
        for variant in variants:
            seed_runs = runs[variant]
            colour = palette[variant]
            steps, train = mean_curve([(run.curve["step"], run.curve["train_error"]) for run in seed_runs])
            axis.plot(steps, 100 * train, color=colour, linewidth=0.9, linestyle="--", alpha=0.85)
            steps_test, test = mean_curve([(run.errors["step"], run.errors["test_error"]) for run in seed_runs])
            few = len(steps_test) <= 20
            axis.plot(steps_test, 100 * test, color=colour, linewidth=2.2, marker="o" if few else None,
                      markersize=3.5, label=label(variant))
            # The first 5% of training (error near chance) would flatten the interesting part.
            plotted += [100 * train[steps > 0.05 * last_step], 100 * test[steps_test > 0.05 * last_step]]
        axis.set_title(title)
        axis.set_xlabel("iterations")
        axis.xaxis.set_major_formatter(FuncFormatter(_iterations))
        axis.xaxis.set_major_locator(MaxNLocator(nbins=6, integer=True))
        axis.set_xlim(0, last_step * 1.02)  # room for the final point's marker
        axis.grid(True, color="0.9", linewidth=0.6)
        handles, _ = axis.get_legend_handles_labels()
        style = [Line2D([], [], color="0.3", linewidth=2.2, label=f"{held_out} error"),
                 Line2D([], [], color="0.3", linewidth=0.9, linestyle="--", label="training error")]
        axis.legend(handles=handles + style, loc="upper right", fontsize=8, framealpha=0.9,
                    ncol=2 if len(handles) > 4 else 1)
    axes[0].set_ylabel("error (%)")
    values = np.concatenate([v for v in plotted if len(v)]) if any(len(v) for v in plotted) else np.asarray([100.0])
    top = min(100.0, float(np.nanmax(values)) * 1.15 + 1.0)
    axes[0].set_ylim(0, top)
    title = (f"{DATASET_TITLE.get(dataset, dataset)}: training (dashed) and {held_out} (bold) error, "
             f"{_seeds_text(runs)}")
    _title(figure, title)
    _save(figure, path)
    return ReportFigure(f"figures/{path.name}", title)


def layer_responses(runs: dict[str, list[Run]], dataset: str, path: Path) -> ReportFigure:
    """Figure 7: std of layer responses per layer, in forward order (left) and sorted (right)."""
    variants = sorted(runs, key=sort_key)
    palette = colours(variants)
    figure = _new_figure(11.5, 4.4)
    left, right = figure.subplots(1, 2, sharey=True)
    for variant in variants:
        stds = mean_responses(runs[variant])
        plain = models.spec(variant).family == "plain"
        layers = np.arange(1, len(stds) + 1)
        style = {"color": palette[variant], "linestyle": "--" if plain else "-", "linewidth": 1.5,
                 "label": label(variant)}
        left.plot(layers, stds, **style)
        right.plot(layers, np.sort(stds)[::-1], **style)
    left.set_title("original order")
    right.set_title("sorted by magnitude")
    left.set_xlabel("layer index (3x3 conv, forward order)")
    right.set_xlabel("rank of layer by response std")
    left.set_ylabel("std of layer response (after BN, before ReLU)")
    for axis in (left, right):
        axis.xaxis.set_major_locator(MaxNLocator(integer=True))
        axis.set_ylim(bottom=0)
        axis.grid(True, color="0.9", linewidth=0.6)
    figure.legend(handles=left.get_lines(), loc="outside right upper", fontsize=8, title="dashed: plain\nsolid: residual",
                  title_fontsize=8, frameon=False)
    held_out = "test" if next(iter(runs.values()))[0].split == "test" else "validation"
    title = (f"{DATASET_TITLE.get(dataset, dataset)}: std of layer responses on the {held_out} set "
             f"(Figure 7), {_seeds_text(runs)}")
    _title(figure, title)
    _save(figure, path)
    return ReportFigure(f"figures/{path.name}", title)


def draw_all(runs: dict[str, list[Run]], dataset: str, directory: Path) -> list[ReportFigure]:
    """Every figure of the report into `directory` (which the caller swaps in atomically)."""
    return [training_curves(runs, dataset, directory / TRAINING_CURVES),
            layer_responses(runs, dataset, directory / LAYER_RESPONSES)]
