// Look inside: a text coloured by one unit (given, or found by a feature), the top units against
// the chance baseline (click one to show it), and the gate-saturation plot.
import { ApiError, post } from "./api.js";
import { byId, colourText, diverging, el, fill, num, say } from "./dom.js";
import { gatePlot } from "./plot.js";

// The features the API can look for (genbot.analysis.features.FEATURES; a test keeps them equal).
export const FEATURES = ["quotes", "line-position", "bracket-depth", "comment", "math", "env-depth"];

const EXAMPLES = {
  "C code": 'static int probe(struct device *dev)\n{\n\t/* find the "clock" */\n\tif (!dev)\n\t\treturn -ENODEV;\n\tfor (i = 0; i < n; i++) {\n\t\tsum += (a[i] * (b[i] + 1));\n\t}\n\treturn 0;\n}\n',
  LaTeX: "\\begin{theorem}\nLet $f(x) = x^2 + 1$. Then \\begin{itemize}\n\\item $f$ is even;\n\\item $f(x) > 0$.\n\\end{itemize}\n\\end{theorem}\n",
  Dialogue: 'ROMEO:\nShe said "good night, sweet lord" and went.\n\nJULIET:\nNow come, the night is fair.\n',
};

let textModels = [];

export function init() {
  const find = byId("ins-find");
  for (const name of FEATURES) find.append(el("option", { value: name, text: name }));
  const examples = byId("ins-example");
  examples.append(el("option", { value: "", text: "— paste your own —" }));
  for (const name of Object.keys(EXAMPLES)) examples.append(el("option", { value: name, text: name }));
  examples.append(el("option", { value: "last", text: "the last generation" }));
  examples.addEventListener("change", () => {
    const choice = examples.value;
    if (choice === "last") byId("ins-text").value = byId("gen-output").textContent;
    else if (choice) byId("ins-text").value = EXAMPLES[choice];
  });
  byId("ins-text").value = EXAMPLES["C code"];
  examples.value = "C code";
  byId("ins-form").addEventListener("submit", (event) => {
    event.preventDefault();
    look();
  });
  byId("ins-output").addEventListener("mouseover", (event) => {
    const target = event.target;
    if (target instanceof HTMLElement && target.dataset.i !== undefined) byId("ins-hover").textContent = target.title;
  });
}

export function setGenerators(list) {
  textModels = list.filter((g) => g.status === "loaded" && g.card?.kind !== "captioner").map((g) => g.name);
  const select = byId("ins-model");
  const keep = select.value;
  fill(select, textModels.map((name) => el("option", { value: name, text: name })));
  if (textModels.includes(keep)) select.value = keep;
}

function request() {
  const value = (id) => byId(id).value.trim();
  const body = { model: byId("ins-model").value, text: byId("ins-text").value, kind: byId("ins-kind").value };
  if (value("ins-layer") !== "") body.layer = Number(value("ins-layer"));
  if (value("ins-unit") !== "") body.unit = Number(value("ins-unit"));
  if (value("ins-find") !== "") {
    body.find = value("ins-find");
    body.top_k = 8;
  }
  return body;
}

/** Run one inspection and show it. */
export async function look(overrides = {}) {
  const status = byId("ins-status");
  const body = { ...request(), ...overrides };
  if (!body.model) {
    say(status, "No text generator is loaded.", "error");
    return;
  }
  say(status, "Tracing…");
  byId("ins-go").disabled = true;
  try {
    const result = await post("/v1/inspect", body);
    render(result, body);
    say(status, "");
  } catch (error) {
    const wait = error instanceof ApiError && error.status === 503 ? " (busy: try again in a moment)" : "";
    say(status, `${error.message}${wait}`, "error");
  } finally {
    byId("ins-go").disabled = false;
  }
}

function render(result, body) {
  const s = result.summary;
  const u = result.unit;
  const dropped = s.dropped?.length ? ` · unknown characters dropped: ${Array.from(s.dropped).join(" ")}` : "";
  const mapped = s.mapped && Object.keys(s.mapped).length ? ` · unknown characters mapped: ${Object.keys(s.mapped).join(" ")}` : "";
  byId("ins-summary").textContent =
    `${result.model}: layer ${u.layer} ${u.kind} unit ${u.index} (${u.reason}) · ${num(s.chars, 0)} chars · ${num(s.bits_per_char)} bits/char${mapped}${dropped}`;
  const values = result.values;
  let max = 0;
  for (const v of values) max = Math.max(max, Math.abs(v));
  const bounded = ["h", "o", "i", "f", "g", "r", "z", "n", "gates"].includes(u.kind);
  const scale = bounded ? 1 : max || 1;
  // Gates are in [0, 1]: centre them so half-open shows as no colour.
  const centred = ["i", "f", "o", "r", "z"].includes(u.kind);
  const shift = (v) => (centred ? 2 * v - 1 : v / scale);
  const out = byId("ins-output");
  // The values follow the characters the model read: unknown ones are mapped or dropped.
  const text = Array.from(result.text ?? "");
  if (text.length === values.length) {
    const title = (i) => `char ${i}: ${JSON.stringify(text[i])} → ${num(values[i], 4)}`;
    colourText(out, text.join(""), values.length, (i) => diverging(shift(values[i])), title);
    out.dataset.coloured = "unit";
  } else {
    out.textContent = body.text;
    out.dataset.coloured = "";
  }
  byId("ins-hover").textContent = "Hover a character to see the unit's value.";
  discovery(result.discovery);
  gates(result.gate_saturation);
}

function discovery(d) {
  const box = byId("ins-discovery");
  if (!d) {
    fill(box);
    return;
  }
  const rows = d.top.map((x) =>
    el(
      "tr",
      {},
      el("td", {}, el("button", {
        type: "button",
        class: "link",
        text: `layer ${x.layer} ${x.kind} unit ${x.index}`,
        onclick: () => {
          byId("ins-layer").value = String(x.layer);
          byId("ins-unit").value = String(x.index);
          byId("ins-kind").value = x.kind;
          byId("ins-find").value = "";
          look({ layer: x.layer, unit: x.index, kind: x.kind, find: undefined, top_k: undefined });
        },
      })),
      el("td", { class: "num", text: (x.r >= 0 ? "+" : "") + num(x.r) }),
      el("td", {}, el("span", { class: "track" }, el("span", { class: "bar", dataset: { r: String(Math.abs(x.r)) } }), el("span", { class: "chance" }))),
    ),
  );
  const table = el(
    "table",
    { class: "rows discovery" },
    el("caption", { text: `Units tracking ${d.feature} (${num(d.units_scored, 0)} scored; chance |r| up to ${num(d.baseline)})` }),
    el("thead", {}, el("tr", {}, el("th", { text: "unit" }), el("th", { text: "r" }), el("th", { text: "|r| vs chance" }))),
    el("tbody", {}, rows),
  );
  fill(box, table);
  // Bar widths are set through the style object (no inline style attribute under the CSP).
  for (const bar of box.querySelectorAll(".bar")) {
    const r = Number(bar.dataset.r);
    bar.style.width = `${Math.round(100 * r)}%`;
    bar.classList.toggle("above", r > d.baseline);
  }
  for (const mark of box.querySelectorAll(".chance")) {
    mark.style.left = `${Math.round(100 * d.baseline)}%`;
    mark.title = `chance: |r| up to ${num(d.baseline)}`;
  }
  box.querySelector("table").append(el("tfoot", {}, el("tr", {}, el("td", { colspan: "3", class: "muted", text: `The mark on each bar is chance: |r| up to ${num(d.baseline)} is the best any unit reaches against the feature shifted at random.` }))));
}

function gates(saturation) {
  const box = byId("ins-gates");
  if (!saturation) {
    fill(box);
    return;
  }
  fill(box, el("h3", { text: "Gate saturation" }), el("p", { class: "muted", text: "Each dot is a unit: how often its gate is nearly shut (< 0.1, across) and nearly open (> 0.9, up)." }), gatePlot(saturation));
}
