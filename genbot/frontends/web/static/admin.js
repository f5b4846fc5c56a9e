// Admin (an admin key, or the local caller where [api] unkeyed_admin allows it): corpora, fine-tune
// jobs watched live with their loss curve, and model versions to activate or roll back to.
import { ApiError, call, get, post, query } from "./api.js";
import { byId, el, fill, num, say } from "./dom.js";
import { lineChart } from "./plot.js";

const POLL_MS = 1000;
const FINISHED = new Set(["succeeded", "failed", "cancelled"]);
let watching = null; // job id being watched
let events = []; // its log so far: each poll asks only for lines after the last one
let timer = null;
let models = [];

export function init() {
  byId("adm-corpus-form").addEventListener("submit", (event) => {
    event.preventDefault();
    upload();
  });
  byId("adm-job-form").addEventListener("submit", (event) => {
    event.preventDefault();
    startJob();
  });
  byId("adm-job-cancel").addEventListener("click", cancelJob);
  byId("adm-ver-model").addEventListener("change", loadVersions);
}

export function setGenerators(list) {
  models = list.filter((g) => g.card?.kind !== "captioner").map((g) => g.name);
  for (const id of ["adm-job-model", "adm-ver-model"]) {
    const select = byId(id);
    const keep = select.value;
    fill(select, models.map((name) => el("option", { value: name, text: name })));
    if (models.includes(keep)) select.value = keep;
  }
}

export function shown() {
  refresh();
}

function problem(error) {
  if (error instanceof ApiError && (error.status === 403 || error.status === 401)) {
    return `${error.message}. Save an admin key under "API key" (genbot keys create NAME --admin).`;
  }
  return error.message;
}

async function refresh() {
  const status = byId("adm-status");
  try {
    await loadCorpora(); // first alone: without admin rights, one refusal says it all
    await Promise.all([loadJobs(), loadVersions()]);
    say(status, "");
  } catch (error) {
    say(status, problem(error), "error");
  }
}

async function loadCorpora() {
  const { corpora } = await get("/v1/admin/corpora");
  fill(
    byId("adm-corpora"),
    corpora.map((c) => el("li", {}, el("strong", { text: c.name }), ` ${num(c.chars, 0)} chars`, c.licence ? ` · ${c.licence}` : "")),
  );
  const select = byId("adm-job-corpus");
  const keep = select.value;
  fill(select, corpora.map((c) => el("option", { value: c.name, text: c.name })));
  if (corpora.some((c) => c.name === keep)) select.value = keep;
}

async function upload() {
  const status = byId("adm-status");
  const name = byId("adm-corpus-name").value.trim();
  const file = byId("adm-corpus-file").files?.[0];
  if (!file) {
    say(status, "Choose a text file to upload.", "error");
    return;
  }
  say(status, `Uploading ${name}…`);
  try {
    const path = `/v1/admin/corpora/${encodeURIComponent(name)}${query({ licence: byId("adm-corpus-licence").value.trim() })}`;
    const row = await call("PUT", path, { body: file, contentType: "text/plain; charset=utf-8" });
    await loadCorpora(); // the list shows the new corpus before the status says it is stored
    byId("adm-job-corpus").value = row.name;
    say(status, `Corpus ${row.name} stored: ${num(row.chars, 0)} characters.`, "ok");
  } catch (error) {
    say(status, problem(error), "error");
  }
}

async function startJob() {
  const status = byId("adm-status");
  const steps = Number(byId("adm-job-steps").value);
  const body = {
    model: byId("adm-job-model").value,
    corpus: byId("adm-job-corpus").value,
    source: byId("adm-job-source").value,
  };
  if (Number.isInteger(steps) && steps > 0) body.steps = steps;
  const every = Number(byId("adm-job-eval").value);
  if (byId("adm-job-eval").value.trim() !== "" && Number.isInteger(every) && every > 0) body.options = { eval_every: every };
  try {
    const job = await post("/v1/admin/jobs", body);
    say(status, `Job ${job.id} queued.`, "ok");
    watch(job.id);
    await loadJobs();
  } catch (error) {
    say(status, problem(error), "error");
  }
}

async function loadJobs() {
  const { jobs } = await get(`/v1/admin/jobs${query({ limit: 10 })}`);
  fill(
    byId("adm-jobs"),
    jobs.map((j) =>
      el(
        "tr",
        { dataset: { id: String(j.id) } },
        el("td", {}, el("button", { type: "button", class: "link", text: `#${j.id}`, onclick: () => watch(j.id) })),
        el("td", { text: j.model }),
        el("td", { text: j.corpus ?? "–" }),
        el("td", {}, el("span", { class: `badge ${j.status}`, text: j.status })),
        el("td", { class: "when", text: new Date(j.created_at).toLocaleString() }),
      ),
    ),
  );
}

/** Follow one job: poll it until it finishes, drawing its figures and loss curve each time. */
function watch(id) {
  watching = id;
  events = [];
  clearTimeout(timer);
  poll();
}

async function poll() {
  const id = watching;
  if (id === null) return;
  try {
    const after = events.length ? events[events.length - 1].id : 0;
    const job = await get(`/v1/admin/jobs/${id}${query({ events_after: after })}`);
    if (id !== watching) return;
    const last = events.length ? events[events.length - 1].id : 0;
    events = events.concat((job.events || []).filter((e) => e.id > last)); // two polls may overlap
    showJob(job);
    if (FINISHED.has(job.status)) {
      await Promise.all([loadJobs(), loadVersions()]);
      return;
    }
  } catch (error) {
    say(byId("adm-status"), problem(error), "error");
    return;
  }
  timer = setTimeout(poll, POLL_MS);
}

function showJob(job) {
  const p = job.progress || {};
  byId("adm-job-title").textContent = `#${job.id} · ${job.model} on ${job.corpus ?? "?"} · ${job.status}`;
  byId("adm-job-panel").dataset.status = job.status;
  const pct = p.progress === undefined ? "–" : `${num(100 * p.progress, 1)} %`;
  const stats = [
    ["status", job.status],
    ["step", p.step === undefined ? "–" : `${p.step}${p.total_steps ? ` / ${p.total_steps}` : ""}`],
    ["progress", pct],
    ["train loss", num(p.train_loss)],
    ["val loss", num(p.val_loss)],
    ["best val", num(p.best_val_loss)],
    ["ETA", p.eta === undefined || p.eta === null ? "–" : `${num(p.eta, 0)} s`],
    ["chars/s", num(p.chars_per_s, 0)],
  ];
  if (job.error) stats.push(["error", job.error]);
  if (job.result_version) stats.push(["new version", String(job.result_version)]);
  fill(byId("adm-job-stats"), stats.flatMap(([k, v]) => [el("dt", { text: k }), el("dd", { dataset: { stat: k }, text: v })]));
  byId("adm-job-sample").textContent = p.sample ?? "";
  byId("adm-job-cancel").disabled = FINISHED.has(job.status);
  const train = [];
  const val = [];
  for (const e of events) {
    const d = e.data || {};
    if (typeof d.step !== "number") continue;
    // Step events come about once a second, eval events every eval_every steps: both carry train_loss.
    if (typeof d.train_loss === "number" && (e.kind === "step" || e.kind === "eval")) train.push([d.step, d.train_loss]);
    if (typeof d.val_loss === "number" && e.kind === "eval") val.push([d.step, d.val_loss]);
  }
  const canvas = byId("adm-loss");
  canvas.dataset.points = String(train.length + val.length);
  lineChart(canvas, [
    { name: "train", points: train, colour: "a" },
    { name: "val", points: val, colour: "b", dots: true },
  ]);
}

async function cancelJob() {
  if (watching === null) return;
  try {
    const job = await post(`/v1/admin/jobs/${watching}/cancel`, {});
    say(byId("adm-status"), `Job ${job.id}: ${job.cancel_requested && job.status === "running" ? "stopping…" : job.status}.`, "warn");
    clearTimeout(timer);
    poll();
  } catch (error) {
    say(byId("adm-status"), problem(error), "error");
  }
}

async function loadVersions() {
  const model = byId("adm-ver-model").value;
  if (!model) return;
  const { versions } = await get(`/v1/admin/models/${encodeURIComponent(model)}/versions`);
  const active = versions.find((v) => v.active)?.version ?? 0;
  fill(
    byId("adm-versions"),
    versions.map((v) =>
      el(
        "tr",
        { dataset: { version: String(v.version), active: String(v.active) } },
        el("td", { text: `v${v.version}` }),
        el("td", { class: "num", text: num(v.val_loss) }),
        el("td", { class: "when", text: new Date(v.created_at).toLocaleString() }),
        el("td", { text: [v.corpus ? `corpus ${v.corpus}` : "", v.job_id ? `job #${v.job_id}` : "", v.parent_version ? `from v${v.parent_version}` : ""].filter(Boolean).join(" · ") }),
        el("td", {}, v.active
          ? el("span", { class: "badge succeeded", text: "active" })
          : el("button", { type: "button", class: "quiet", text: v.version < active ? "Roll back" : "Activate", onclick: () => activate(model, v.version) })),
      ),
    ),
  );
}

async function activate(model, version) {
  try {
    await post(`/v1/admin/models/${encodeURIComponent(model)}/activate`, { version });
    say(byId("adm-status"), `${model} v${version} is active.`, "ok");
    await loadVersions();
  } catch (error) {
    say(byId("adm-status"), problem(error), "error");
  }
}
