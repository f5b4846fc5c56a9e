// Caption: drop or choose an image; the captions come back best first with their log-probs.
import { call } from "./api.js";
import { byId, el, fill, num, say } from "./dom.js";

let previewUrl = null;

export function init() {
  const drop = byId("cap-drop");
  const input = byId("cap-file");
  input.addEventListener("change", () => input.files?.[0] && send(input.files[0]));
  for (const name of ["dragenter", "dragover"]) {
    drop.addEventListener(name, (event) => {
      event.preventDefault();
      drop.classList.add("over");
    });
  }
  for (const name of ["dragleave", "drop"]) drop.addEventListener(name, () => drop.classList.remove("over"));
  drop.addEventListener("drop", (event) => {
    event.preventDefault();
    const file = event.dataTransfer?.files?.[0];
    if (file) send(file);
  });
  byId("cap-form").addEventListener("submit", (event) => event.preventDefault());
}

export function setGenerators(list) {
  const names = list.filter((g) => g.status === "loaded" && g.card?.kind === "captioner").map((g) => g.name);
  const select = byId("cap-model");
  fill(select, names.map((name) => el("option", { value: name, text: name })));
  say(byId("cap-status"), names.length ? "" : "No captioner is loaded.", names.length ? "" : "warn");
}

async function send(file) {
  const status = byId("cap-status");
  const model = byId("cap-model").value;
  if (!model) {
    say(status, "No captioner is loaded.", "error");
    return;
  }
  const form = new FormData();
  form.append("image", file, file.name || "image");
  form.append("model", model);
  form.append("beam", byId("cap-beam").value || "3");
  form.append("count", byId("cap-count").value || "3");
  if (previewUrl) URL.revokeObjectURL(previewUrl);
  previewUrl = URL.createObjectURL(file);
  const preview = byId("cap-preview");
  preview.src = previewUrl;
  preview.hidden = false;
  fill(byId("cap-list"));
  say(status, "Captioning…");
  try {
    const result = await call("POST", "/v1/caption", { body: form });
    fill(
      byId("cap-list"),
      result.captions.map((c) =>
        el("li", {}, el("span", { class: "caption-text", text: c.text }), el("span", { class: "logprob", text: `log p ${num(c.logprob, 2)}` })),
      ),
    );
    say(status, `${result.method} search, beam ${result.beam}, ${num(result.duration_ms, 0)} ms`, "ok");
  } catch (error) {
    say(status, error.message, "error");
  }
}
