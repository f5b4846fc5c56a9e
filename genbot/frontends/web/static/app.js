// The playground's entry point: tabs, the API key, the generator list every view shares.
import { apiKey, get, setApiKey } from "./api.js";
import { byId, say } from "./dom.js";
import * as admin from "./admin.js";
import * as caption from "./caption.js";
import * as generate from "./generate.js";
import * as history from "./history.js";
import * as inspect from "./inspect.js";

const VIEWS = { generate, inspect, caption, history, admin };

/** Show one view; the others are hidden (and their tabs unselected). */
export function show(name) {
  for (const view of Object.keys(VIEWS)) {
    const active = view === name;
    byId(`view-${view}`).hidden = !active;
    const tab = byId(`tab-${view}`);
    tab.setAttribute("aria-selected", String(active));
    tab.tabIndex = active ? 0 : -1;
  }
  VIEWS[name].shown?.();
}

function setUpTabs() {
  const names = Object.keys(VIEWS);
  for (const name of names) byId(`tab-${name}`).addEventListener("click", () => show(name));
  // Arrow keys move between tabs, as a tab list should.
  byId("tab-generate").parentElement.addEventListener("keydown", (event) => {
    if (event.key !== "ArrowRight" && event.key !== "ArrowLeft") return;
    const current = names.findIndex((n) => byId(`tab-${n}`).getAttribute("aria-selected") === "true");
    const next = names[(current + (event.key === "ArrowRight" ? 1 : names.length - 1)) % names.length];
    show(next);
    byId(`tab-${next}`).focus();
  });
}

function setUpKey() {
  const summary = byId("key-summary");
  const label = () => (summary.textContent = apiKey() ? "API key ✓" : "API key");
  byId("key-input").value = apiKey();
  byId("key-form").addEventListener("submit", (event) => {
    event.preventDefault();
    setApiKey(byId("key-input").value.trim());
    label();
    load();
  });
  byId("key-clear").addEventListener("click", () => {
    setApiKey("");
    byId("key-input").value = "";
    label();
    load();
  });
  label();
}

/** Fetch the generators and hand them to every view. */
async function load() {
  try {
    const { generators } = await get("/v1/generators");
    for (const view of Object.values(VIEWS)) view.setGenerators?.(generators);
  } catch (error) {
    say(byId("gen-status"), `Could not list generators: ${error.message}`, "error");
  }
}

function start() {
  setUpTabs();
  setUpKey();
  for (const view of Object.values(VIEWS)) view.init({ show });
  const hash = location.hash.slice(1);
  const [name] = hash.split("?");
  show(VIEWS[name] ? name : "generate");
  load();
}

start();
