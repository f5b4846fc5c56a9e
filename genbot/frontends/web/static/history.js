// History: the caller's own generations, newest first, searchable; each one re-runnable.
import { get, query } from "./api.js";
import { byId, el, fill, say } from "./dom.js";
import { rerun } from "./generate.js";

const PAGE = 25;
let offset = 0;
let show = () => {};
let textModels = new Set();

export function init(app) {
  show = app.show;
  byId("hist-form").addEventListener("submit", (event) => {
    event.preventDefault();
    load(true);
  });
  byId("hist-more").addEventListener("click", () => load(false));
}

export function shown() {
  load(true);
}

export function setGenerators(list) {
  textModels = new Set(list.filter((g) => g.status === "loaded" && g.card?.kind !== "captioner").map((g) => g.name));
  const select = byId("hist-model");
  const keep = select.value;
  fill(select, el("option", { value: "", text: "all" }), list.map((g) => el("option", { value: g.name, text: g.name })));
  select.value = list.some((g) => g.name === keep) ? keep : "";
}

async function load(fresh) {
  const status = byId("hist-status");
  if (fresh) offset = 0;
  const params = { search: byId("hist-search").value.trim(), model: byId("hist-model").value, limit: PAGE, offset };
  say(status, "Loading…");
  try {
    const { generations } = await get(`/v1/generations${query(params)}`);
    const rows = generations.map(row);
    if (fresh) fill(byId("hist-rows"), rows);
    else byId("hist-rows").append(...rows);
    offset += generations.length;
    byId("hist-more").hidden = generations.length < PAGE;
    say(status, offset ? `${offset} shown` : "Nothing stored yet.");
  } catch (error) {
    say(status, error.message, "error");
  }
}

function row(g) {
  const when = new Date(g.created_at);
  const again = el("button", {
    type: "button",
    class: "quiet",
    text: "Re-run",
    title: "Generate again with this prompt, these parameters and this seed",
    onclick: () => {
      show("generate");
      rerun({
        model: g.model, prompt: g.prompt ?? "", temperature: g.temperature, top_k: g.top_k, top_p: g.top_p,
        length: g.max_length, seed: g.seed, stop: g.stop ?? [],
      });
    },
  });
  return el(
    "tr",
    { dataset: { id: String(g.id), status: g.status } },
    el("td", { class: "when", text: Number.isNaN(when.getTime()) ? g.created_at : when.toLocaleString() }),
    el("td", { text: g.model }),
    el("td", { class: "text" }, el("span", { class: "prompt", text: g.prompt ?? "" }), el("span", { class: "output-text", text: g.output ?? "" })),
    el("td", {}, el("span", { class: `badge ${g.status}`, text: g.status })),
    el("td", {}, textModels.has(g.model) ? again : null), // captions and unloaded models cannot re-run here
  );
}
