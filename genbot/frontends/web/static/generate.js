// Generate: generator cards, the sampling form, streamed text, Stop/Esc, the footer figures and the
// "reproduce" link; optionally each character coloured by its probability or by a unit, live.
import { ApiError, get, post, query, stream } from "./api.js";
import { byId, colourText, diverging, el, fill, likelihood, num, say } from "./dom.js";

const FIELDS = ["temperature", "top_k", "top_p", "length", "seed"];
const INSPECT_MAX = 5000; // the API's cap on an inspected text
const LIVE_EVERY_MS = 400; // re-colour a streaming text at most this often (one request in flight)

let generators = [];
let selected = "";
let running = null; // the generation in progress: { controller, started, firstAt, text, request, done }
let pendingFill = null; // a reproduce link seen before the generators were known

export function init() {
  byId("gen-form").addEventListener("submit", (event) => {
    event.preventDefault();
    run();
  });
  byId("gen-stop-button").addEventListener("click", stop);
  document.addEventListener("keydown", (event) => {
    if (event.key === "Escape" && running) {
      event.preventDefault();
      stop();
    } else if (event.key === "Enter" && (event.ctrlKey || event.metaKey) && !byId("view-generate").hidden) {
      event.preventDefault();
      if (!running) run();
    }
  });
  byId("gen-colour").addEventListener("change", showUnitFields);
  showUnitFields();
  const hash = location.hash.slice(1);
  if (hash.startsWith("generate?")) pendingFill = new URLSearchParams(hash.slice("generate?".length));
  window.addEventListener("hashchange", () => {
    const h = location.hash.slice(1);
    if (h.startsWith("generate?")) refill(new URLSearchParams(h.slice("generate?".length)));
  });
}

function showUnitFields() {
  const unit = byId("gen-colour").value === "unit";
  for (const node of document.querySelectorAll("#gen-form .unit-only")) node.hidden = !unit;
}

export function setGenerators(list) {
  generators = list.filter((g) => g.status === "loaded" && g.card?.kind !== "captioner");
  if (!generators.some((g) => g.name === selected)) selected = generators[0]?.name ?? "";
  renderCards(list.filter((g) => g.card?.kind !== "captioner"));
  if (pendingFill) {
    refill(pendingFill);
    pendingFill = null;
  }
}

function renderCards(list) {
  const box = byId("cards");
  if (!list.length) {
    fill(box, el("p", { class: "muted", text: "No text generator is loaded." }));
    return;
  }
  fill(box, list.map(card));
}

function card(entry) {
  const c = entry.card;
  const loaded = entry.status === "loaded";
  const arch = c?.architecture;
  const size = arch ? `${arch.cell.toUpperCase()} ${arch.layers}×${arch.hidden}` : "";
  const val = c?.metrics?.val_block ?? c?.metrics?.val_loss;
  const node = el(
    "button",
    {
      type: "button",
      role: "radio",
      class: "card",
      "aria-checked": String(entry.name === selected),
      disabled: !loaded,
      dataset: { model: entry.name },
      onclick: () => {
        selected = entry.name;
        for (const other of byId("cards").children) other.setAttribute("aria-checked", String(other === node));
      },
    },
    el("strong", { text: entry.name }),
    el("span", { class: "muted", text: loaded ? c?.description || "" : `failed: ${entry.error || "not loaded"}` }),
    el(
      "dl",
      {},
      el("dt", { text: "corpus" }),
      el("dd", { text: c?.corpus || "–" }),
      el("dt", { text: "size" }),
      el("dd", { text: size || "–" }),
      el("dt", { text: "val loss" }),
      el("dd", { text: val === undefined ? "–" : `${num(val)} nats/char` }),
      el("dt", { text: "licence" }),
      el("dd", { text: c?.licence || "–" }),
    ),
  );
  return node;
}

/** The request body from the form (empty fields take the model's defaults). */
function body() {
  const value = (id) => byId(id).value.trim();
  const number = (id) => (value(id) === "" ? undefined : Number(value(id)));
  const stops = value("gen-stop")
    .split(",")
    .map((s) => s.replaceAll("\\n", "\n").replaceAll("\\t", "\t"))
    .filter((s) => s !== "");
  // The seed stays text: Number() would round one above 2**53 and break "same seed, same text".
  const seed = value("gen-seed");
  if (seed !== "" && !/^\d+$/.test(seed)) throw new Error("The seed is a whole number, 0 or more.");
  return {
    model: selected,
    prompt: byId("gen-prompt").value,
    temperature: number("gen-temperature"),
    top_k: number("gen-top-k"),
    top_p: number("gen-top-p"),
    length: number("gen-length"),
    seed: seed === "" ? undefined : seed,
    stop: stops,
    stream: true,
  };
}

async function run() {
  const status = byId("gen-status");
  if (!selected) {
    say(status, "Pick a generator first.", "error");
    return;
  }
  let request;
  try {
    request = body();
  } catch (error) {
    say(status, error.message, "error");
    return;
  }
  const out = byId("gen-output");
  byId("gen-echo").textContent = request.prompt; // the prompt, muted, ahead of what the model adds
  byId("gen-text").textContent = "";
  out.dataset.status = "running";
  fill(byId("gen-footer"));
  say(status, "Generating…");
  const state = { controller: new AbortController(), started: performance.now(), firstAt: null, text: "", request };
  running = state;
  setRunning(true);
  const live = liveColouring(state);
  try {
    await stream(
      "/v1/generate",
      request,
      (event, data) => {
        if (event === "token") {
          if (state.firstAt === null) state.firstAt = performance.now();
          state.text += data.text;
          live.update();
        } else if (event === "error") {
          say(status, `Failed: ${data?.error?.message ?? "generation failed"}`, "error");
        } else if (event === "done") {
          state.done = data;
        }
      },
      state.controller.signal,
    );
    if (!state.done) throw new Error("The connection closed before the generation finished.");
    finished(state, state.done);
    await live.finish();
  } catch (error) {
    if (error.name === "AbortError") await cancelled(state);
    else say(status, message(error), "error");
    out.dataset.status = error.name === "AbortError" ? "cancelled" : "failed";
  } finally {
    running = null;
    setRunning(false);
  }
}

function message(error) {
  if (error instanceof ApiError && error.status === 429) return `Slow down: ${error.message}`;
  return error.message || String(error);
}

function setRunning(on) {
  byId("gen-go").disabled = on;
  byId("gen-stop-button").disabled = !on;
}

function stop() {
  running?.controller.abort();
}

function finished(state, done) {
  const out = byId("gen-output");
  out.dataset.status = done.status;
  out.dataset.id = String(done.id);
  const status = byId("gen-status");
  if (done.status === "completed") say(status, `Done: ${done.stats?.done_reason ?? "completed"}.`, "ok");
  else if (done.status === "cancelled") say(status, "Cancelled.", "warn");
  else say(status, `Failed: ${done.stats?.error ?? "generation failed"}`, "error");
  footer(state, done.seed, done.stats);
}

/** After Stop: the server ends the stream when the client leaves; show the row it stored. */
async function cancelled(state) {
  const out = byId("gen-output");
  out.dataset.status = "cancelled";
  say(byId("gen-status"), "Cancelled.", "warn");
  footer(state, state.request.seed, null);
  const row = await storedRow(state);
  if (row) {
    say(byId("gen-status"), `Cancelled after ${row.chars} characters (generation #${row.id} is stored as ${row.status}).`, "warn");
    footer(state, row.seed, null);
  }
}

/** The stored row of the generation just stopped (its final status is written once it ends). */
async function storedRow(state) {
  for (let attempt = 0; attempt < 20; attempt++) {
    try {
      const { generations } = await get(`/v1/generations${query({ model: state.request.model, limit: 1 })}`);
      const row = generations[0];
      if (row && row.status !== "running") return row;
    } catch {
      return null;
    }
    await new Promise((resolve) => setTimeout(resolve, 150));
  }
  return null;
}

function footer(state, seed, stats) {
  const elapsed = (performance.now() - state.started) / 1000;
  const chars = Array.from(state.text).length;
  const ttfc = state.firstAt === null ? null : state.firstAt - state.started;
  const rate = stats?.chars_per_s ?? (elapsed > 0 ? chars / elapsed : 0);
  const params = { ...state.request, seed: seed ?? state.request.seed };
  const hash = reproduceHash(params);
  const link = el("a", {
    href: hash,
    class: "reproduce",
    text: "reproduce",
    title: "Fill the form with these parameters and this seed",
    onclick: (event) => {
      event.preventDefault(); // the same link twice would not fire hashchange
      history.replaceState(null, "", hash);
      refill(new URLSearchParams(hash.slice("#generate?".length)));
    },
  });
  fill(
    byId("gen-footer"),
    el("span", { text: `${chars} chars` }),
    el("span", { text: `${num(rate, 0)} chars/s` }),
    el("span", { text: `first char ${ttfc === null ? "–" : `${num(ttfc, 0)} ms`}` }),
    el("span", { class: "seed", text: `seed ${seed ?? "–"}` }),
    seed === undefined || seed === null ? null : link,
  );
}

function reproduceHash(params) {
  const q = new URLSearchParams({ model: params.model, prompt: params.prompt });
  for (const name of FIELDS) if (params[name] !== undefined && params[name] !== null) q.set(name, String(params[name]));
  if (params.stop?.length) q.set("stop", JSON.stringify(params.stop));
  return `#generate?${q.toString()}`;
}

/**
 * Fill the form with a stored generation's prompt and parameters and run it again (History's
 * Re-run): the same seed gives the same text.
 */
export function rerun(params) {
  const hash = reproduceHash(params);
  history.replaceState(null, "", hash);
  refill(new URLSearchParams(hash.slice("#generate?".length)));
  if (!running) run();
}

/** Fill the form from a reproduce link's parameters. */
function refill(q) {
  const model = q.get("model");
  if (model && generators.some((g) => g.name === model)) {
    selected = model;
    for (const node of byId("cards").children) node.setAttribute("aria-checked", String(node.dataset.model === model));
  }
  byId("gen-prompt").value = q.get("prompt") ?? "";
  const ids = { temperature: "gen-temperature", top_k: "gen-top-k", top_p: "gen-top-p", length: "gen-length", seed: "gen-seed" };
  for (const [name, id] of Object.entries(ids)) byId(id).value = q.get(name) ?? "";
  let stops = [];
  try {
    stops = JSON.parse(q.get("stop") || "[]");
  } catch {
    stops = [];
  }
  byId("gen-stop").value = Array.isArray(stops)
    ? stops.map((s) => String(s).replaceAll("\n", "\\n").replaceAll("\t", "\\t")).join(",")
    : "";
  say(byId("gen-status"), "Form refilled from the link: Generate repeats it.");
}

/**
 * Colouring of the streaming text: plain text until a colouring arrives; at most one inspect
 * request in flight, repeated every LIVE_EVERY_MS while characters arrive, and once at the end.
 */
function liveColouring(state) {
  const out = byId("gen-output");
  const textNode = byId("gen-text");
  const mode = byId("gen-colour").value;
  delete out.dataset.coloured;
  let shown = 0; // characters already coloured
  let inFlight = null;
  let lastAt = 0;
  let values = null;

  function paint() {
    // Follow the text as it grows, unless the reader has scrolled up to look at something.
    const following = out.scrollHeight - out.scrollTop - out.clientHeight < 24;
    draw();
    if (following) out.scrollTop = out.scrollHeight;
  }

  function draw() {
    const text = state.text;
    if (!values) {
      textNode.textContent = text;
      return;
    }
    const colour = mode === "prob" ? (i) => likelihood(values[i]) : (i) => diverging(values[i] / scale(values));
    const title =
      mode === "prob"
        ? (i) => `p = ${num(values[i], 4)}`
        : (i) => `value ${num(values[i], 4)}`;
    colourText(textNode, text, Math.min(shown, values.length), colour, title);
  }

  async function refresh(final = false) {
    const text = state.text;
    const promptChars = Array.from(state.request.prompt);
    const whole = promptChars.join("") + text;
    const length = Array.from(whole).length;
    if (length > INSPECT_MAX) {
      if (final) say(byId("gen-status"), `Done; colouring covers up to ${INSPECT_MAX} characters of prompt and text.`, "warn");
      return;
    }
    if (length < 2) return;
    const req = { model: state.request.model, text: whole };
    if (mode === "unit") {
      const layer = byId("gen-layer").value.trim();
      req.layer = layer === "" ? undefined : Number(layer);
      req.unit = Number(byId("gen-unit").value.trim() || "0");
    }
    try {
      const result = await post("/v1/inspect", req);
      const offset = promptChars.length;
      const count = Array.from(text).length;
      if (result.values.length !== offset + count) {
        // The model dropped characters it does not know: the values no longer line up with the text.
        if (final) say(byId("gen-status"), "Done; not coloured: the prompt has characters the model does not know.", "warn");
        return;
      }
      values =
        mode === "prob"
          ? result.surprise.slice(offset).map((s) => (s === null ? 1 : Math.exp(-s)))
          : result.values.slice(offset);
      shown = count;
      // "live" while the text still grows; the mode's name once the whole text is coloured.
      out.dataset.coloured = final ? mode : "live";
    } catch (error) {
      if (error instanceof ApiError && error.status === 503) return "busy";
      say(byId("gen-status"), `Colouring: ${error.message}`, "error");
    }
  }

  return {
    update() {
      if (mode === "" || mode === "prob") {
        paint();
        return;
      }
      paint();
      if (!inFlight && performance.now() - lastAt >= LIVE_EVERY_MS) {
        lastAt = performance.now();
        inFlight = refresh().finally(() => {
          inFlight = null;
          paint();
        });
      }
    },
    async finish() {
      if (!mode) return;
      if (inFlight) await inFlight;
      // The inspection slots may be busy for a moment (503): try again briefly, then leave it.
      for (let attempt = 0; attempt < 5; attempt++) {
        if (attempt) await new Promise((resolve) => setTimeout(resolve, 500));
        if ((await refresh(true)) !== "busy") break;
      }
      paint();
    },
  };
}

/** The scale a unit's values are shown at: h and gates are bounded, c is not. */
function scale(values) {
  let max = 0;
  for (const v of values) max = Math.max(max, Math.abs(v));
  return max > 1 ? max : 1;
}
