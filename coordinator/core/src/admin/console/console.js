// The lambdex staff console: plain JavaScript over the admin API, no
// build step, nothing fetched from elsewhere. The token lives in
// sessionStorage (this tab only) and goes out as the bearer token.
"use strict";

const TOKEN_KEY = "lambdex-token";
const $ = (id) => document.getElementById(id);
let me = null; // { token, scopes }

function setStatus(text) {
  $("status").textContent = text || "";
}

function showError(text) {
  const box = $("error");
  box.textContent = text || "";
  box.hidden = !text;
}

// Calls the API; an error answer is thrown with the API's own words.
async function api(path, options = {}) {
  const headers = Object.assign({}, options.headers || {});
  const token = sessionStorage.getItem(TOKEN_KEY);
  if (token) headers["Authorization"] = "Bearer " + token;
  const response = await fetch(path, Object.assign({}, options, { headers }));
  const type = response.headers.get("content-type") || "";
  const body = type.includes("application/json") ? await response.json() : await response.text();
  if (!response.ok && !(body && body.job_id)) {
    const message = body && body.error ? body.error : `${response.status} ${response.statusText}`;
    const error = new Error(message);
    error.status = response.status;
    throw error;
  }
  return { status: response.status, body, headers: response.headers };
}

function allowed(scope) {
  return !scope || (me && me.scopes.includes(scope));
}

// --- screens -------------------------------------------------------------

function show(screen) {
  for (const section of document.querySelectorAll(".screen")) section.hidden = true;
  if (!me) screen = "sign-in";
  const link = document.querySelector(`#nav a[href="#${screen}"]`);
  if (screen !== "sign-in" && (!link || !allowed(link.dataset.scope))) screen = "glance";
  $("screen-" + screen).hidden = false;
  for (const a of document.querySelectorAll("#nav a")) {
    if (a.getAttribute("href") === "#" + screen) a.setAttribute("aria-current", "page");
    else a.removeAttribute("aria-current");
  }
  showError("");
  if (screen === "dead-letters") loadLetters();
  if (screen === "glance") loadGlance();
  const heading = $("screen-" + screen).querySelector("h2");
  if (heading) {
    heading.tabIndex = -1;
    heading.focus();
  }
}

function route() {
  show((location.hash || "#label").slice(1));
}

async function signIn(token) {
  sessionStorage.setItem(TOKEN_KEY, token);
  try {
    const { body } = await api("/v1/whoami");
    me = body;
  } catch (error) {
    sessionStorage.removeItem(TOKEN_KEY);
    me = null;
    showError(error.message);
    return false;
  }
  $("who-name").textContent = `Signed in as ${me.token} (${me.scopes.join(", ") || "no scopes"})`;
  $("who").hidden = false;
  $("nav").hidden = false;
  for (const element of document.querySelectorAll("[data-scope]")) {
    element.hidden = !allowed(element.dataset.scope);
  }
  return true;
}

function signOut() {
  sessionStorage.removeItem(TOKEN_KEY);
  me = null;
  $("who").hidden = true;
  $("nav").hidden = true;
  location.hash = "";
  show("sign-in");
}

// --- drawing -------------------------------------------------------------

function faceLabel(face) {
  const parts = [];
  if (face.age) parts.push(`${face.age.years.toFixed(0)} ± ${face.age.std_dev.toFixed(0)} y`);
  if (face.gender) parts.push(`${face.gender.label} ${(face.gender.probability * 100).toFixed(0)}%`);
  return parts.join(", ") || "face";
}

// Draws `source` (an image or bitmap) with the faces boxed and labelled,
// line and text sized to the picture so they read at any size.
function drawFaces(canvas, source, faces) {
  const width = source.naturalWidth || source.width;
  const height = source.naturalHeight || source.height;
  canvas.width = width;
  canvas.height = height;
  const context = canvas.getContext("2d");
  context.drawImage(source, 0, 0, width, height);
  const line = Math.max(2, Math.round(Math.max(width, height) / 300));
  const font = Math.max(14, Math.round(Math.max(width, height) / 40));
  context.font = `bold ${font}px sans-serif`;
  context.textBaseline = "top";
  faces.forEach((face, i) => {
    const box = face.bbox;
    context.lineWidth = line;
    context.strokeStyle = "#ffd400";
    context.strokeRect(box.x, box.y, box.width, box.height);
    const text = `${i + 1}: ${faceLabel(face)}`;
    const textWidth = context.measureText(text).width + font / 2;
    const y = box.y >= font * 1.4 ? box.y - font * 1.4 : box.y + box.height;
    context.fillStyle = "rgba(0, 0, 0, 0.78)";
    context.fillRect(box.x, y, textWidth, font * 1.4);
    context.fillStyle = "#ffffff";
    context.fillText(text, box.x + font / 4, y + font * 0.2);
  });
}

function facesTable(faces) {
  if (!faces.length) return "<p>No face found.</p>";
  const rows = faces
    .map((face, i) => {
      const b = face.bbox;
      const age = face.age ? `${face.age.years.toFixed(1)} ± ${face.age.std_dev.toFixed(1)}` : "–";
      const gender = face.gender ? face.gender.label : "–";
      const p = face.gender ? (face.gender.probability * 100).toFixed(1) + "%" : "–";
      return `<tr><td>${i + 1}</td><td>${age}</td><td>${escape(gender)}</td><td>${p}</td>` +
        `<td>${face.score.toFixed(2)}</td><td>${[b.x, b.y, b.width, b.height].map((v) => v.toFixed(0)).join(", ")}</td></tr>`;
    })
    .join("");
  return `<table class="faces"><caption>Faces</caption><thead><tr><th scope="col">#</th><th scope="col">Age (years)</th>` +
    `<th scope="col">Gender</th><th scope="col">Probability</th><th scope="col">Detection score</th>` +
    `<th scope="col">Box x, y, w, h</th></tr></thead><tbody>${rows}</tbody></table>`;
}

function escape(text) {
  return String(text).replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" })[c]);
}

function factsOf(doc) {
  const timings = (doc.timings || []).map((t) => `${escape(t.stage)} ${t.ms.toFixed(0)} ms`).join(", ");
  const cost = doc.billing ? `$${doc.billing.estimated_cost_usd.toFixed(6)} (${doc.billing.billed_ms} ms billed)` : "–";
  return `<p>Status: <strong>${escape(doc.status)}</strong>${doc.failure ? " — " + escape(doc.failure.reason) : ""}</p>` +
    `<p>Timings: ${timings || "–"}</p><p>Estimated cost: ${cost}</p>`;
}

function loadImage(src) {
  return new Promise((resolve, reject) => {
    const image = new Image();
    image.onload = () => resolve(image);
    image.onerror = () => reject(new Error("the browser cannot load the photo"));
    image.src = src;
  });
}

// --- label a photo -------------------------------------------------------

let dropped = null;

async function label(event) {
  event.preventDefault();
  showError("");
  const file = dropped || $("file").files[0];
  const url = $("image-url").value.trim();
  if (!file && !url) {
    showError("Pick or drop a photo, or paste its URL.");
    return;
  }
  const store = allowed("store") && $("store").checked;
  const jobId = $("job-id").value.trim();
  let request;
  if (file) {
    const query = new URLSearchParams();
    if (store) query.set("store", "true");
    if (jobId) query.set("job_id", jobId);
    request = api(`/v1/predictions?${query}`, {
      method: "POST",
      headers: { "Content-Type": file.type || "application/octet-stream" },
      body: file,
    });
  } else {
    const body = { image_url: url, store };
    if (jobId) body.job_id = jobId;
    request = api("/v1/predictions", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify(body),
    });
  }
  setStatus("Labelling…");
  try {
    const { body: doc, headers } = await request;
    const stored = headers.get("x-lambdex-stored");
    setStatus(stored === "true" ? `Labelled and stored as ${doc.job_id}.` : "Labelled.");
    $("label-result").hidden = false;
    $("label-faces").innerHTML = facesTable(doc.faces || []);
    $("label-facts").innerHTML = factsOf(doc);
    $("label-raw").textContent = JSON.stringify(doc, null, 2);
    const source = file ? URL.createObjectURL(file) : url;
    try {
      drawFaces($("label-canvas"), await loadImage(source), doc.faces || []);
      $("label-canvas").hidden = false;
    } catch (error) {
      $("label-canvas").hidden = true;
    }
  } catch (error) {
    setStatus("");
    showError(error.message);
  }
}

// --- look up a job -------------------------------------------------------

async function lookUp(event) {
  event.preventDefault();
  showError("");
  const id = $("lookup-id").value.trim();
  setStatus("Looking up…");
  try {
    const { body } = await api(`/v1/jobs/${encodeURIComponent(id)}`);
    setStatus("");
    $("job-result").hidden = false;
    $("job-title").textContent = id;
    const states = {
      stored: "stored",
      failed: "failed (dead-lettered)",
      unknown: "unknown — nothing recorded yet: queued, running, or never submitted",
    };
    $("job-state").textContent = states[body.state] || body.state;
    const doc = body.document;
    const failure = doc && doc.failure;
    $("job-failure").hidden = !failure;
    $("job-failure").textContent = failure ? `Failure: ${failure.class} — ${failure.reason}` : "";
    $("job-faces").innerHTML = doc && body.state === "stored" ? facesTable(doc.faces || []) : "";
    $("job-raw").textContent = doc ? JSON.stringify(doc, null, 2) : "(no document)";
    $("job-canvas").hidden = true;
    $("job-photo-note").hidden = true;
    if (doc && /^https?:\/\//i.test(doc.image_url)) {
      try {
        drawFaces($("job-canvas"), await loadImage(doc.image_url), doc.faces || []);
        $("job-canvas").hidden = false;
      } catch (error) {
        $("job-photo-note").textContent = "The browser cannot load this photo.";
        $("job-photo-note").hidden = false;
      }
    }
  } catch (error) {
    setStatus("");
    showError(error.message);
  }
}

// --- dead letters --------------------------------------------------------

let pendingReplay = null;

function time(text) {
  return text ? new Date(text).toLocaleString() : "–";
}

async function loadLetters() {
  if (!allowed("read")) return;
  setStatus("Reading the dead letters…");
  try {
    const { body } = await api("/v1/dead-letters?latest=20");
    setStatus("");
    $("letters-total").textContent = body.total;
    $("reasons").querySelector("tbody").innerHTML = body.reasons
      .map((r) => {
        const button = allowed("replay")
          ? `<button type="button" data-reason="${escape(r.reason)}">Replay ${escape(r.reason)}</button>`
          : "–";
        return `<tr><td>${escape(r.reason)}</td><td>${r.count}</td><td>${time(r.oldest)}</td><td>${time(r.newest)}</td><td>${button}</td></tr>`;
      })
      .join("") || `<tr><td colspan="5">No dead letters.</td></tr>`;
    $("latest").querySelector("tbody").innerHTML = (body.latest || [])
      .map((l) => {
        const history = (l.history || []).map((h) => `<li>${escape(h)}</li>`).join("");
        return `<tr><td>${escape(l.id)}</td><td>${escape(l.reason)}</td><td>${l.attempts ?? "–"}</td>` +
          `<td>${time(l.last_failure)}</td><td><ol>${history || `<li>${escape(l.error || "–")}</li>`}</ol></td></tr>`;
      })
      .join("") || `<tr><td colspan="5">None.</td></tr>`;
  } catch (error) {
    setStatus("");
    showError(error.message);
  }
}

async function askReplay(reason) {
  showError("");
  $("replay-outcome").hidden = true;
  try {
    const { body } = await api("/v1/dead-letters/replay", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ reason, dry_run: true }),
    });
    const count = Object.values(body.taken).reduce((a, b) => a + b, 0);
    pendingReplay = { reason, count };
    $("replay-question").textContent = `Replay ${count} dead letter${count === 1 ? "" : "s"} of reason ${reason}?`;
    $("replay-confirm").hidden = false;
    $("replay-yes").disabled = count === 0;
    $("replay-yes").focus();
  } catch (error) {
    showError(error.message);
  }
}

async function replay() {
  const { reason, count } = pendingReplay;
  $("replay-confirm").hidden = true;
  try {
    const { body } = await api("/v1/dead-letters/replay", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ reason, limit: count }),
    });
    const taken = Object.values(body.taken).reduce((a, b) => a + b, 0);
    $("replay-outcome").textContent = `Replayed ${taken} dead letter${taken === 1 ? "" : "s"} of reason ${reason}.`;
    $("replay-outcome").hidden = false;
    await loadLetters();
  } catch (error) {
    showError(error.message);
  }
}

// --- at a glance ---------------------------------------------------------

// Prometheus text: [{ name, labels, value }].
function parseMetrics(text) {
  const samples = [];
  for (const line of text.split("\n")) {
    if (!line || line.startsWith("#")) continue;
    const match = line.match(/^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{([^}]*)\})?\s+(\S+)/);
    if (!match) continue;
    const labels = {};
    for (const pair of (match[3] || "").matchAll(/(\w+)="((?:[^"\\]|\\.)*)"/g)) labels[pair[1]] = pair[2];
    samples.push({ name: match[1], labels, value: Number(match[4]) });
  }
  return samples;
}

function table(caption, head, rows) {
  const body = rows.length
    ? rows.map((row) => `<tr>${row.map((cell) => `<td>${escape(cell)}</td>`).join("")}</tr>`).join("")
    : `<tr><td colspan="${head.length}">None yet.</td></tr>`;
  return `<table><caption>${escape(caption)}</caption><thead><tr>${head.map((h) => `<th scope="col">${escape(h)}</th>`).join("")}</tr></thead><tbody>${body}</tbody></table>`;
}

async function loadGlance() {
  try {
    const { body } = await api("/metrics");
    const samples = parseMetrics(body);
    const of = (name) => samples.filter((s) => s.name === name);
    const jobs = of("lambdex_jobs_total").map((s) => [s.labels.outcome, s.value]);
    const queues = of("lambdex_queue_messages").map((s) => [s.labels.queue, s.value]);
    const calls = {};
    for (const s of of("lambdex_invocations_total")) (calls[s.labels.function] ||= [0, 0])[0] += s.value;
    for (const s of of("lambdex_invocation_errors_total")) (calls[s.labels.function] ||= [0, 0])[1] += s.value;
    const invocations = Object.entries(calls).map(([f, [n, e]]) => [f, n, e]);
    const predictions = of("lambdex_predictions_total").map((s) => [s.labels.status, s.value]);
    const cost = of("lambdex_estimated_cost_usd").reduce((sum, s) => sum + s.value, 0);
    $("glance-tables").innerHTML =
      table("Queues", ["Queue", "Messages ready"], queues) +
      table("Jobs", ["Outcome", "Count"], jobs) +
      table("Predictions", ["Status", "Count"], predictions) +
      table("Invocations", ["Function", "Calls", "Errors"], invocations) +
      `<p>Estimated cost: <strong>$${cost.toFixed(4)}</strong></p>`;
  } catch (error) {
    showError(error.message);
  }
}

// --- wiring --------------------------------------------------------------

document.addEventListener("DOMContentLoaded", async () => {
  $("sign-in-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    if (await signIn($("token").value.trim())) {
      $("token").value = "";
      route();
    }
  });
  $("sign-out").addEventListener("click", signOut);
  $("label-form").addEventListener("submit", label);
  $("file").addEventListener("change", () => {
    dropped = null;
  });
  const drop = $("drop");
  drop.addEventListener("dragover", (event) => {
    event.preventDefault();
    drop.classList.add("over");
  });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (event) => {
    event.preventDefault();
    drop.classList.remove("over");
    dropped = event.dataTransfer.files[0] || null;
    if (dropped) setStatus(`Photo ${dropped.name} ready.`);
  });
  $("job-form").addEventListener("submit", lookUp);
  $("letters-refresh").addEventListener("click", loadLetters);
  $("reasons").addEventListener("click", (event) => {
    const reason = event.target.dataset && event.target.dataset.reason;
    if (reason) askReplay(reason);
  });
  $("replay-yes").addEventListener("click", replay);
  $("replay-no").addEventListener("click", () => {
    $("replay-confirm").hidden = true;
    pendingReplay = null;
  });
  $("glance-refresh").addEventListener("click", loadGlance);
  window.addEventListener("hashchange", route);
  const token = sessionStorage.getItem(TOKEN_KEY);
  if (token) await signIn(token);
  route();
});
