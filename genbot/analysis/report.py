"""One inspection, start to end: what front ends call (blocking; run it in a worker thread).

``inspect_model(loaded, InspectRequest(...))`` reads the text, picks the unit (given, or the best
one for ``find``, or the busiest one), and returns an ``InspectReport``: plain data for JSON plus
the rendered files as bytes (``unit.png``, ``unit.html``, ``surprise.png``, ``surprise.html``,
``gates.png``). Front ends decide where the bytes go: files, a Discord attachment, an HTTP body.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from genbot.analysis.activations import GATE_NAMES, Saturation, Trace, gate_saturation, trace_text
from genbot.analysis.discovery import Discovery, discover
from genbot.analysis.features import FEATURES
from genbot.analysis.render import activation_scale, render_html, render_png, saturation_png, surprise_scale
from genbot.errors import InvalidRequest
from genbot.networks.checkpoint import LoadedGenerator, load_model


@dataclass
class InspectRequest:
    """What to look at: the text, a unit (or a feature to find one), and which views to render."""

    text: str
    layer: int | None = None  # 0-based; default: the unit found by ``find``, else the top layer
    unit: int | None = None  # 0-based; default: found by ``find``, else the most variable unit
    kind: str = "h"  # h | c (LSTM) | a gate name (i f g o for LSTM, r z n for GRU) | gates
    find: str | None = None  # a feature name from genbot.analysis.features.FEATURES
    surprise: bool = False  # also render the text coloured by -log p of each char
    gates: bool = False  # also render the gate saturation plot
    top_k: int = 5  # units to report for ``find``
    render: bool = True  # False: data only, no PNG/HTML


@dataclass
class UnitChoice:
    """The unit a view shows and why it was chosen."""

    layer: int
    index: int
    kind: str
    reason: str  # "given", "found", "most variable"


@dataclass
class InspectReport:
    """Plain data about one inspection and the rendered files by name."""

    model: str
    summary: dict[str, object]
    unit: UnitChoice
    values: list[float]  # the chosen unit's activation after each char
    surprise: list[float | None]
    discovery: Discovery | None = None
    gate_saturation: Saturation | None = None
    files: dict[str, bytes] = field(default_factory=dict)

    def to_dict(self, values: bool = False) -> dict[str, object]:
        """JSON-ready data; per-char values only when asked (they are as long as the text)."""
        out: dict[str, object] = {"model": self.model, "summary": self.summary, "unit": asdict(self.unit)}
        if self.discovery is not None:
            out["discovery"] = self.discovery.to_dict()
        if values:
            out |= {"values": self.values, "surprise": self.surprise}
        if self.gate_saturation is not None:
            out["gate_saturation"] = self.gate_saturation
        return out

    def lines(self) -> list[str]:
        """The report as text: summary, top units against the chance baseline, the unit shown."""
        s, u = self.summary, self.unit
        out = [f"{self.model}: {s['chars']:,} chars, {s['bits_per_char']} bits/char"]
        if s["mapped"] or s["dropped"]:
            out.append(f"note: unknown chars mapped {s['mapped']} and dropped {s['dropped']!r}")
        d = self.discovery
        if d is not None:
            out.append(f"units tracking {d.feature} ({d.units_scored} scored; chance |r| up to {d.baseline:.3f}):")
            out += [f"  layer {x.layer} {x.kind} unit {x.index:<4} r = {x.r:+.3f}" for x in d.top]
        out.append(f"showing layer {u.layer} {u.kind} unit {u.index} ({u.reason})")
        return out


def check_request(loaded: LoadedGenerator, req: InspectRequest) -> None:
    """InvalidRequest naming the first bad field: layer, unit, kind or feature."""
    cfg = loaded.network.config
    if req.layer is not None and not 0 <= req.layer < cfg.layers:
        raise InvalidRequest(f"layer must be 0..{cfg.layers - 1} for this model, got {req.layer}")
    if req.unit is not None and not 0 <= req.unit < cfg.hidden:
        raise InvalidRequest(f"unit must be 0..{cfg.hidden - 1} for this model, got {req.unit}")
    kinds = ["h", *(["c"] if cfg.cell == "lstm" else []), *GATE_NAMES[cfg.cell], "gates"]
    if req.kind not in kinds:
        raise InvalidRequest(f"kind must be one of {', '.join(kinds)} for a {cfg.cell} model, got {req.kind!r}")
    if req.find is not None and req.find not in FEATURES:
        raise InvalidRequest(f"unknown feature {req.find!r} (known: {', '.join(FEATURES)})")
    if req.find is not None and req.kind not in ("h", "c"):
        raise InvalidRequest("--find scores h and c units; leave --kind at h or c")
    if not 1 <= req.top_k <= 100:
        raise InvalidRequest(f"top_k must be 1..100, got {req.top_k}")


def inspect_folder(folder: Path, req: InspectRequest) -> InspectReport:
    """Load the model folder and inspect it (CheckpointError if it does not load)."""
    return inspect_model(load_model(folder), req)


def inspect_model(loaded: LoadedGenerator, req: InspectRequest) -> InspectReport:
    """Run the inspection ``req`` asks for on ``loaded``; raises InvalidRequest on bad input."""
    check_request(loaded, req)
    want_gates = req.gates or req.kind == "gates"
    kind = "h" if req.kind == "gates" else req.kind
    need_gates = want_gates or kind in GATE_NAMES[loaded.network.config.cell]
    trace = trace_text(loaded.network, loaded.vocab, req.text, gates=need_gates)
    found = discover(trace, req.find, req.top_k) if req.find else None
    choice = choose_unit(trace, req, kind, found)
    values = trace.layers[choice.layer].kind(choice.kind)[:, choice.index]
    report = InspectReport(
        model=loaded.card.name,
        summary=trace.summary(),
        unit=choice,
        values=[round(float(v), 5) for v in values],
        surprise=[None if not np.isfinite(s) else round(float(s), 5) for s in trace.surprise],
        discovery=found,
        gate_saturation=gate_saturation(trace) if want_gates else None,
    )
    if req.render:
        report.files = render_views(trace, report, req)
    return report


def choose_unit(trace: Trace, req: InspectRequest, kind: str, found: Discovery | None) -> UnitChoice:
    """The given unit; else the best found one; else the most variable unit of the layer."""
    if found is not None and req.unit is None:
        best = next((u for u in found.top if req.layer is None or u.layer == req.layer), found.top[0])
        return UnitChoice(best.layer, best.index, best.kind, "found")
    layer = len(trace.layers) - 1 if req.layer is None else req.layer
    acts = trace.layers[layer].kind(kind)
    if req.unit is not None:
        return UnitChoice(layer, req.unit, kind, "given")
    return UnitChoice(layer, int(np.argmax(acts.var(axis=0))), kind, "most variable")


def render_views(trace: Trace, report: InspectReport, req: InspectRequest) -> dict[str, bytes]:
    """PNG and HTML of the unit view, and of surprise and gate saturation when asked."""
    u = report.unit
    values = np.asarray(report.values, dtype=np.float64)
    title = f"{report.model} · layer {u.layer} {u.kind} unit {u.index}{_found_note(report)}"
    scale = activation_scale(u.kind, values, f"{u.kind} activation")
    files = {"unit.png": render_png(trace.text, values, scale, title)}
    files["unit.html"] = render_html(trace.text, values, scale, title).encode("utf-8")
    if req.surprise:
        s_title = f"{report.model} · surprise per char · {report.summary['bits_per_char']} bits/char"
        s_scale = surprise_scale(trace.surprise)
        files["surprise.png"] = render_png(trace.text, trace.surprise.astype(np.float64), s_scale, s_title)
        files["surprise.html"] = render_html(trace.text, trace.surprise, s_scale, s_title).encode("utf-8")
    if report.gate_saturation is not None:
        files["gates.png"] = saturation_png(report.gate_saturation, f"{report.model} · gate saturation")
    return files


def _found_note(report: InspectReport) -> str:
    """`` · feature r=+0.62 (chance 0.21)`` when the unit came from a discovery."""
    d = report.discovery
    if d is None:
        return ""
    u = report.unit
    r = next((s.r for s in d.top if (s.layer, s.index, s.kind) == (u.layer, u.index, u.kind)), None)
    shown = f"r={r:+.2f}" if r is not None else "not in the top units"
    return f" · {d.feature} {shown} (chance {d.baseline:.2f})"
