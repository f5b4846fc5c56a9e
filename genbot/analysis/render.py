"""Pictures of what a unit does: the text as a character grid coloured per character.

PNG through matplotlib's Agg canvas (no pyplot, so it is safe in worker threads) and standalone
HTML with inline styles. Colours follow the paper's figures: a blue–red diverging map for
activations (blue low, red high), a white-to-red map for surprise. The PNG is sized in pixels so
it reads at 100% zoom: 12 px DejaVu Sans Mono in 9 x 17 px cells, 100 columns, a colour bar.
"""

from __future__ import annotations

import html
import io
import math
from dataclasses import dataclass

import numpy as np
from matplotlib.axes import Axes
from matplotlib.colors import Colormap, Normalize, to_hex
from matplotlib.figure import Figure

from genbot.analysis.activations import Saturation

COLUMNS = 100  # characters per rendered line before wrapping
MAX_LINES = 60  # rendered lines in a PNG; the HTML shows the whole text
CELL_W, CELL_H, FONT_PX = 9, 17, 12  # pixels at 100 dpi
DPI = 100
HTML_SHADES = 65  # colour steps in the HTML view (one CSS class each keeps the file small)
_SHOWN = {"\n": "↵", "\t": "→"}
_Box = tuple[float, float, float, float]  # left, bottom, width, height as figure fractions
_GATE_COLOURS = {"i": "tab:green", "f": "tab:blue", "o": "tab:red", "r": "tab:purple", "z": "tab:orange"}


@dataclass(frozen=True)
class ColourScale:
    """How values become colours: a matplotlib colormap name, its range and the colour bar label."""

    cmap: str
    vmin: float
    vmax: float
    label: str

    def colormap(self) -> Colormap:
        """The colormap with NaN (no value) drawn white."""
        from matplotlib import colormaps

        cmap = colormaps[self.cmap].with_extremes(bad="white")
        return cmap

    def norm(self) -> Normalize:
        """Value → [0, 1] over this scale's range."""
        return Normalize(self.vmin, self.vmax, clip=True)


def activation_scale(kind: str, values: np.ndarray, label: str) -> ColourScale:
    """Blue–red scale for a unit: h and tanh gates in [-1, 1], sigmoid gates in [0, 1], c symmetric."""
    if kind in ("h", "g", "n"):
        return ColourScale("RdBu_r", -1.0, 1.0, label)
    if kind in ("i", "f", "o", "r", "z"):
        return ColourScale("RdBu_r", 0.0, 1.0, label)
    finite = np.abs(values[np.isfinite(values)])
    bound = float(np.percentile(finite, 99)) if finite.size else 1.0
    return ColourScale("RdBu_r", -max(bound, 1e-3), max(bound, 1e-3), label)


def surprise_scale(surprise: np.ndarray) -> ColourScale:
    """White (expected) to red (surprising), up to the 99th percentile of the text's surprise."""
    finite = surprise[np.isfinite(surprise)]
    top = float(np.percentile(finite, 99)) if finite.size else 1.0
    return ColourScale("Reds", 0.0, max(top, 1.0), "surprise −log p (nats)")


def grid(text: str, columns: int = COLUMNS) -> list[list[int]]:
    """Character positions laid out in rows: wrapped at ``columns``, a newline ends its row."""
    rows: list[list[int]] = [[]]
    for t, ch in enumerate(text):
        if len(rows[-1]) == columns:
            rows.append([])
        rows[-1].append(t)
        if ch == "\n":
            rows.append([])
    return rows if rows[-1] else rows[:-1]


def shown(ch: str) -> str:
    """How a character is drawn: visible marks for newline and tab, a dot for other controls."""
    if ch in _SHOWN:
        return _SHOWN[ch]
    return "·" if not ch.isprintable() else ch


def _ink(rgba: tuple[float, ...]) -> str:
    """Black text on light backgrounds, white on dark ones."""
    r, g, b = rgba[:3]
    return "black" if 0.299 * r + 0.587 * g + 0.114 * b > 0.5 else "white"


def render_png(text: str, values: np.ndarray, scale: ColourScale, title: str, max_lines: int = MAX_LINES) -> bytes:
    """The text as a character grid, each cell coloured by its value, with a colour bar."""
    rows = grid(text)
    cut = len(rows) > max_lines
    rows = rows[:max_lines]
    if cut:
        title += f"  (first {rows[-1][-1] + 1:,} of {len(text):,} chars)"
    cells = np.full((len(rows), COLUMNS), np.nan)
    for r, row in enumerate(rows):
        cells[r, : len(row)] = values[row]
    fig, ax = _grid_figure(len(rows))
    cmap, norm = scale.colormap(), scale.norm()
    image = ax.imshow(cells, cmap=cmap, norm=norm, aspect="auto", interpolation="nearest",
                      extent=(0, COLUMNS, len(rows), 0))  # fmt: skip
    _draw_chars(ax, text, rows, values, cmap, norm)
    fig.suptitle(title, x=10 / fig.bbox.width, ha="left", fontsize=10)
    bar = max(min(200, len(rows) * CELL_H), 60)
    cax = fig.add_axes(_px_box(fig, 10 + COLUMNS * CELL_W + 16, fig.bbox.height - 40 - bar, bar))
    fig.colorbar(image, cax=cax).set_label(scale.label, fontsize=9)
    return _png_bytes(fig)


def _grid_figure(lines: int) -> tuple[Figure, Axes]:
    """A figure sized in pixels for ``lines`` rows of cells, and its borderless grid axes."""
    width = 10 + COLUMNS * CELL_W + 110
    height = 40 + max(lines * CELL_H, 60) + 12
    fig = Figure(figsize=(width / DPI, height / DPI), dpi=DPI)
    ax = fig.add_axes(_px_box(fig, 10, 12, lines * CELL_H, COLUMNS * CELL_W))
    ax.set_axis_off()
    return fig, ax


def _px_box(fig: Figure, left: float, bottom: float, height: float, width: float = 14) -> _Box:
    """An axes rectangle given in pixels from the figure's bottom-left, as figure fractions."""
    w, h = fig.bbox.width, fig.bbox.height
    return (left / w, bottom / h, width / w, height / h)


def _draw_chars(
    ax: Axes, text: str, rows: list[list[int]], values: np.ndarray, cmap: Colormap, norm: Normalize
) -> None:
    """One text artist per visible character, centred in its cell, ink chosen for contrast."""
    for r, row in enumerate(rows):
        for col, t in enumerate(row):
            ch = shown(text[t])
            if ch == " ":
                continue
            v = values[t]
            ink = _ink(cmap(norm(v))) if math.isfinite(v) else "black"
            ax.text(col + 0.5, r + 0.55, ch, ha="center", va="center", color=ink,
                    family="DejaVu Sans Mono", fontsize=FONT_PX * 72 / DPI, parse_math=False)  # fmt: skip


def _png_bytes(fig: Figure) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI)
    return buf.getvalue()


def render_html(text: str, values: np.ndarray, scale: ColourScale, title: str) -> str:
    """Standalone HTML: the whole text, each character's background coloured, a legend on top."""
    cmap, norm = scale.colormap(), scale.norm()
    spans = []
    for t, ch in enumerate(text):
        v = float(values[t])
        shade = round(float(norm(v)) * (HTML_SHADES - 1)) if math.isfinite(v) else "n"
        tip = f' title="{v:.3f}"' if math.isfinite(v) else ""
        spans.append(f'<span class="s{shade}"{tip}>{html.escape(_SHOWN.get(ch, ch))}</span>')
        if ch == "\n":
            spans.append("\n")
    return _HTML.format(
        title=html.escape(title), styles=_shade_styles(cmap), legend=_legend(scale, cmap), body="".join(spans)
    )


def _shade_styles(cmap: Colormap) -> str:
    """One CSS class per colour shade (``s0`` … ``s{HTML_SHADES-1}``, ``sn`` for no value)."""
    rules = [".sn{background:#fff;color:#000}"]
    for k in range(HTML_SHADES):
        rgba = cmap(k / (HTML_SHADES - 1))
        rules.append(f".s{k}{{background:{to_hex(rgba)};color:{_ink(rgba)}}}")
    return "\n".join(rules)


def _legend(scale: ColourScale, cmap: Colormap) -> str:
    """A gradient bar with the range's ends and middle labelled."""
    stops = ", ".join(to_hex(cmap(x)) for x in np.linspace(0, 1, 11))
    mid = (scale.vmin + scale.vmax) / 2
    return (
        f'<div style="font:13px sans-serif;margin:6px 0">{html.escape(scale.label)}</div>'
        f'<div style="width:320px;height:14px;border:1px solid #888;'
        f'background:linear-gradient(to right, {stops})"></div>'
        f'<div style="width:320px;display:flex;justify-content:space-between;font:12px sans-serif">'
        f"<span>{scale.vmin:.2f}</span><span>{mid:.2f}</span><span>{scale.vmax:.2f}</span></div>"
    )


_HTML = """<!doctype html>
<html><head><meta charset="utf-8"><title>{title}</title>
<style>
{styles}
</style></head>
<body style="margin:16px;background:#fff">
<h3 style="font:600 15px sans-serif;margin:0 0 6px">{title}</h3>
{legend}
<pre style="font:14px/1.45 'DejaVu Sans Mono',Menlo,monospace;white-space:pre-wrap;max-width:100ch">{body}</pre>
</body></html>
"""


def saturation_png(stats: Saturation, title: str) -> bytes:
    """The paper's gate plot: per layer, each gate unit at (fraction < 0.1, fraction > 0.9)."""
    layers = len(stats)
    fig = Figure(figsize=(3.6 * layers + 0.4, 4.0), dpi=DPI)
    axes = fig.subplots(1, layers, squeeze=False)[0]
    for layer, (ax, gates) in enumerate(zip(axes, stats, strict=True)):
        ax.plot([0, 1], [1, 0], color="0.8", lw=1, zorder=0)
        for name, (left, right) in gates.items():
            ax.scatter(left, right, s=8, alpha=0.6, color=_GATE_COLOURS.get(name, "k"), label=f"{name} gate")
        ax.set(xlim=(0, 1), ylim=(0, 1), xlabel="left-saturated (< 0.1)", title=f"layer {layer}")
        ax.set_aspect("equal")
    axes[0].set_ylabel("right-saturated (> 0.9)")
    axes[0].legend(loc="upper right", fontsize=8)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return _png_bytes(fig)
