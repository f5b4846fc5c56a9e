// Plots drawn on <canvas> through its 2D API: a loss curve that grows as a job reports, and the
// gate-saturation scatter. Colours come from the page's CSS variables (light and dark themes).
import { el } from "./dom.js";

function colours() {
  const css = getComputedStyle(document.documentElement);
  const v = (name, fallback) => css.getPropertyValue(name).trim() || fallback;
  return { fg: v("--fg", "#222"), muted: v("--muted", "#777"), grid: v("--line", "#ddd"), a: v("--accent", "#3b5bdb"), b: v("--warm", "#e8590c") };
}

/** Size a canvas's backing store to its CSS size times the pixel ratio (crisp lines); its 2D context. */
function prepare(canvas) {
  const ratio = window.devicePixelRatio || 1;
  const width = canvas.clientWidth || canvas.width;
  const height = canvas.clientHeight || canvas.height;
  canvas.width = Math.round(width * ratio);
  canvas.height = Math.round(height * ratio);
  const ctx = canvas.getContext("2d");
  ctx.setTransform(ratio, 0, 0, ratio, 0, 0);
  ctx.clearRect(0, 0, width, height);
  return { ctx, width, height };
}

function niceTicks(lo, hi, count) {
  const span = hi - lo || 1;
  const step = 10 ** Math.floor(Math.log10(span / count));
  const err = (count * step) / span;
  const mult = err <= 0.15 ? 10 : err <= 0.35 ? 5 : err <= 0.75 ? 2 : 1;
  const s = step * mult;
  const ticks = [];
  for (let t = Math.ceil(lo / s) * s; t <= hi + 1e-9; t += s) ticks.push(Number(t.toPrecision(6)));
  return ticks;
}

/**
 * Draw lines on `canvas`: `series` is [{ name, points: [[x, y], …], colour: "a" | "b" }].
 * Axes fit the points; a legend names each series.
 */
export function lineChart(canvas, series, { xLabel = "step", yLabel = "loss" } = {}) {
  const { ctx, width, height } = prepare(canvas);
  const c = colours();
  const pad = { left: 48, right: 12, top: 14, bottom: 30 };
  const all = series.flatMap((s) => s.points);
  ctx.font = "12px system-ui, sans-serif";
  ctx.fillStyle = c.muted;
  if (!all.length) {
    ctx.fillText("No losses reported yet.", pad.left, height / 2);
    return;
  }
  let [x0, x1] = [Math.min(...all.map((p) => p[0])), Math.max(...all.map((p) => p[0]))];
  let [y0, y1] = [Math.min(...all.map((p) => p[1])), Math.max(...all.map((p) => p[1]))];
  if (x0 === x1) x1 = x0 + 1;
  if (y0 === y1) [y0, y1] = [y0 - 0.5, y1 + 0.5];
  const margin = (y1 - y0) * 0.05;
  [y0, y1] = [y0 - margin, y1 + margin];
  const X = (x) => pad.left + ((x - x0) / (x1 - x0)) * (width - pad.left - pad.right);
  const Y = (y) => height - pad.bottom - ((y - y0) / (y1 - y0)) * (height - pad.top - pad.bottom);
  ctx.strokeStyle = c.grid;
  ctx.lineWidth = 1;
  ctx.textAlign = "right";
  ctx.textBaseline = "middle";
  for (const t of niceTicks(y0, y1, 4)) {
    ctx.beginPath();
    ctx.moveTo(pad.left, Y(t));
    ctx.lineTo(width - pad.right, Y(t));
    ctx.stroke();
    ctx.fillText(String(t), pad.left - 6, Y(t));
  }
  ctx.textAlign = "center";
  ctx.textBaseline = "top";
  for (const t of niceTicks(x0, x1, 6)) ctx.fillText(String(t), X(t), height - pad.bottom + 6);
  ctx.textAlign = "left";
  ctx.fillText(`${yLabel} by ${xLabel}`, pad.left, 0);
  let legendX = width - pad.right;
  for (const s of [...series].reverse()) {
    const colour = c[s.colour] || c.a;
    const w = ctx.measureText(s.name).width;
    legendX -= w;
    ctx.fillStyle = colour;
    ctx.fillText(s.name, legendX, 0);
    legendX -= 16;
    ctx.strokeStyle = colour;
    ctx.lineWidth = 2;
    ctx.beginPath();
    ctx.moveTo(X(s.points[0]?.[0] ?? x0), Y(s.points[0]?.[1] ?? y0));
    s.points.forEach(([x, y], i) => (i === 0 ? ctx.moveTo(X(x), Y(y)) : ctx.lineTo(X(x), Y(y))));
    ctx.stroke();
    if (s.points.length === 1 || s.dots) {
      for (const [x, y] of s.points) {
        ctx.beginPath();
        ctx.arc(X(x), Y(y), 3, 0, 2 * Math.PI);
        ctx.fillStyle = colour;
        ctx.fill();
      }
    }
  }
}

/**
 * The gate-saturation scatter: one small square plot per layer and gate, each unit a dot at
 * (fraction of time < 0.1, fraction of time > 0.9). Returns a <div> of canvases.
 */
export function gatePlot(saturation) {
  const box = el("div", { class: "gate-grid" });
  const c = colours();
  saturation.forEach((gatesOfLayer, layer) => {
    for (const [gate, [left, right]] of Object.entries(gatesOfLayer)) {
      const canvas = el("canvas", { class: "gate", width: 160, height: 160, "aria-label": `layer ${layer} gate ${gate}` });
      const figure = el("figure", {}, canvas, el("figcaption", { text: `layer ${layer} · ${gate} gate` }));
      box.append(figure);
      requestAnimationFrame(() => {
        const { ctx, width, height } = prepare(canvas);
        const pad = 12;
        const size = Math.min(width, height) - 2 * pad;
        ctx.strokeStyle = c.grid;
        ctx.strokeRect(pad, pad, size, size);
        ctx.beginPath();
        ctx.moveTo(pad, pad);
        ctx.lineTo(pad + size, pad + size); // left + right = 1: no unit lies beyond it
        ctx.stroke();
        ctx.fillStyle = c.a;
        ctx.globalAlpha = 0.6;
        left.forEach((l, i) => {
          ctx.beginPath();
          ctx.arc(pad + l * size, pad + (1 - right[i]) * size, 2.5, 0, 2 * Math.PI);
          ctx.fill();
        });
        ctx.globalAlpha = 1;
      });
    }
  });
  return box;
}
