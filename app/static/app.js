// The draw-to-search page: Pointer Events drawing (mouse, touch, pen), undo/clear/brush, upload or
// drag-and-drop, words that search alone or refine the drawing (weight slider), "more like this" on every
// result, and a debounced live search. No framework, no build step, nothing from the network
// but this service.
"use strict";

const $ = (id) => document.getElementById(id);
const canvas = $("canvas"), pad = $("pad"), ctx = canvas.getContext("2d");
const DEBOUNCE_MS = 250;

const state = {
  strokes: [],          // [{width, points: [[x, y], ...]}] in CSS pixels
  current: null,        // the stroke being drawn
  pointerId: null,
  upload: null,         // {blob, image} when the query is an uploaded file
  like: null,           // id of the photo whose "more like this" is the query (never together with a sketch)
  timer: null,
  controller: null,     // AbortController of the request in flight
  seq: 0,
  apiKeyRequired: false,
  weightSet: false,     // the user moved the slider: /info's default no longer applies
};

// ---- drawing ------------------------------------------------------------------------------------
function resizeCanvas() {
  const rect = canvas.getBoundingClientRect(), ratio = window.devicePixelRatio || 1;
  canvas.width = Math.round(rect.width * ratio);
  canvas.height = Math.round(rect.height * ratio);
  ctx.setTransform(ratio, 0, 0, ratio, 0, 0);
  redraw();
}

function redraw() {
  const rect = canvas.getBoundingClientRect();
  ctx.fillStyle = "#fff";
  ctx.fillRect(0, 0, rect.width, rect.height);
  if (state.upload) {
    const { image } = state.upload;
    const scale = Math.min(rect.width / image.width, rect.height / image.height);
    const w = image.width * scale, h = image.height * scale;
    ctx.drawImage(image, (rect.width - w) / 2, (rect.height - h) / 2, w, h);
  }
  ctx.strokeStyle = ctx.fillStyle = "#000";
  ctx.lineCap = ctx.lineJoin = "round";
  for (const stroke of state.strokes) drawStroke(stroke);
  $("hint").hidden = state.strokes.length > 0 || state.upload !== null;
}

function drawStroke({ width, points }) {
  ctx.lineWidth = width;
  if (points.length === 1) {
    ctx.beginPath();
    ctx.arc(points[0][0], points[0][1], width / 2, 0, 2 * Math.PI);
    ctx.fill();
    return;
  }
  ctx.beginPath();
  ctx.moveTo(points[0][0], points[0][1]);
  for (const [x, y] of points.slice(1)) ctx.lineTo(x, y);
  ctx.stroke();
}

function pointOf(event) {
  const rect = canvas.getBoundingClientRect();
  return [Math.round((event.clientX - rect.left) * 10) / 10, Math.round((event.clientY - rect.top) * 10) / 10];
}

canvas.addEventListener("pointerdown", (event) => {
  if (state.pointerId !== null || (event.pointerType === "mouse" && event.button !== 0)) return;
  event.preventDefault();
  try { canvas.setPointerCapture(event.pointerId); } catch (error) { /* pointer already gone: draw anyway */ }
  if (state.upload) { state.upload = null; }  // drawing starts a new sketch-from-strokes query
  setLike(null);  // a sketch and a liked photo are two different queries
  state.pointerId = event.pointerId;
  state.current = { width: Number($("brush").value), points: [pointOf(event)] };
  state.strokes.push(state.current);
  redraw();
});

canvas.addEventListener("pointermove", (event) => {
  if (event.pointerId !== state.pointerId || !state.current) return;
  const events = event.getCoalescedEvents ? event.getCoalescedEvents() : [event];
  for (const e of (events.length ? events : [event])) state.current.points.push(pointOf(e));
  redraw();
  scheduleSearch();
});

function endStroke(event) {
  if (event.pointerId !== state.pointerId) return;
  state.pointerId = null;
  state.current = null;
  scheduleSearch();
}
canvas.addEventListener("pointerup", endStroke);
canvas.addEventListener("pointercancel", endStroke);

function undo() {
  if (state.strokes.length) state.strokes.pop();
  else state.upload = null;
  redraw();
  scheduleSearch();
}

function clearAll() {
  state.strokes = [];
  state.upload = null;
  setLike(null);
  $("text").value = "";
  redraw();
  showResults(null);
  $("message").textContent = "";
}

$("undo").addEventListener("click", undo);
$("clear").addEventListener("click", clearAll);
document.addEventListener("keydown", (event) => {
  if ((event.ctrlKey || event.metaKey) && event.key.toLowerCase() === "z") { event.preventDefault(); undo(); }
});

// ---- upload and drag-and-drop -------------------------------------------------------------------
function useFile(file) {
  if (!file) return;
  const url = URL.createObjectURL(file), image = new Image();
  image.onload = () => {
    URL.revokeObjectURL(url);
    state.strokes = [];
    state.upload = { blob: file, image };
    setLike(null);
    redraw();
    scheduleSearch(0);
  };
  image.onerror = () => {  // not displayable here: still let the server judge it (it explains why)
    URL.revokeObjectURL(url);
    state.strokes = [];
    state.upload = null;
    redraw();
    search({ blob: file });
  };
  image.src = url;
}

$("file").addEventListener("change", (event) => { useFile(event.target.files[0]); event.target.value = ""; });
for (const name of ["dragenter", "dragover"]) {
  pad.addEventListener(name, (event) => { event.preventDefault(); pad.classList.add("dragging"); });
}
for (const name of ["dragleave", "drop"]) {
  pad.addEventListener(name, (event) => { event.preventDefault(); pad.classList.remove("dragging"); });
}
pad.addEventListener("drop", (event) => useFile(event.dataTransfer.files[0]));
for (const id of ["k", "category", "as-photo"]) $(id).addEventListener("change", () => scheduleSearch(0));

// ---- words and "more like this" -----------------------------------------------------------------
function words() {
  return $("text").value.trim();
}

// The slider matters only when the words are mixed with a drawing, an upload or a liked photo.
function updateWeightField() {
  $("weight-field").hidden = !(words() && (hasInk() || state.upload || state.like !== null));
  $("weight-value").textContent = Number($("text-weight").value).toFixed(2);
}

function setLike(id) {
  state.like = id;
  $("like-chip").hidden = id === null;
  $("like-id").textContent = id === null ? "" : `#${id}`;
}

function moreLike(id) {
  state.strokes = [];
  state.upload = null;
  setLike(id);
  redraw();
  scheduleSearch(0);
}

$("text").addEventListener("input", () => scheduleSearch());  // search as you type, debounced
$("text-weight").addEventListener("input", () => { state.weightSet = true; scheduleSearch(); });
$("unlike").addEventListener("click", () => { setLike(null); scheduleSearch(0); });
$("api-key").addEventListener("change", (event) => {
  localStorage.setItem("sbir-api-key", event.target.value);
  loadInfo();  // the categories and index details come with the key
  scheduleSearch(0);
});

// ---- API key ------------------------------------------------------------------------------------
// With a key configured the page asks for it once and sends it on /search and /info; result photos come
// as signed URLs, so <img> needs no header.
function keyHeaders() {
  const key = $("api-key").value || localStorage.getItem("sbir-api-key");
  return key ? { "X-API-Key": key } : {};
}

function askForKey(text) {
  $("key-field").hidden = false;
  $("status").textContent = text;
  if (!$("api-key").value) $("api-key").focus({ preventScroll: true });
}

// ---- searching ----------------------------------------------------------------------------------
function scheduleSearch(delay = DEBOUNCE_MS) {
  updateWeightField();
  clearTimeout(state.timer);
  state.timer = setTimeout(() => search(), delay);
}

function hasInk() {
  return state.strokes.some((s) => s.points.length > 0);
}

// A drawing whose points all coincide (one click) has nothing to compare: ask for more instead of searching.
function isDotOnly() {
  const points = state.strokes.flatMap((s) => s.points);
  return points.every(([x, y]) => x === points[0][0] && y === points[0][1]);
}

// The query fields beside the picture: words (and their weight when mixed), the upload's kind.
function queryFields(mixed) {
  const fields = {}, text = words();
  if (text) fields.text = text;
  if (text && mixed) fields.text_weight = Number($("text-weight").value);
  return fields;
}

async function search(override) {
  const k = Number($("k").value), category = $("category").value || null;
  let body, headers = {};
  const blob = (override && override.blob) || (state.upload && state.upload.blob);
  if (blob) {
    body = formFor(blob, k, category, { ...queryFields(true), ...($("as-photo").checked ? { as: "photo" } : {}) });
  } else if (hasInk() && isDotOnly()) {
    showResults(null);
    $("message").textContent = "Keep drawing: a single dot is not enough to search.";
    return;
  } else if (hasInk() || state.like !== null || words()) {
    const query = hasInk() ? { strokes: state.strokes.map((s) => s.points) } : {};
    if (!hasInk() && state.like !== null) query.like = state.like;
    body = JSON.stringify({ ...query, ...queryFields(hasInk() || state.like !== null), k, category });
    headers["Content-Type"] = "application/json";
  } else {
    showResults(null);
    $("message").textContent = "";
    return;
  }
  Object.assign(headers, keyHeaders());
  if (state.controller) state.controller.abort();
  const controller = new AbortController(), seq = ++state.seq;
  state.controller = controller;
  try {
    const response = await fetch("/search", { method: "POST", body, headers, signal: controller.signal });
    const data = await response.json().catch(() => ({}));
    if (seq !== state.seq) return;  // a newer search has started
    if (!response.ok) {
      if (response.status === 401) askForKey("an API key is required");
      showResults(null, "No results for this sketch.");  // never leave an older sketch's results on show
      $("message").textContent = data.detail || `Search failed (HTTP ${response.status}).`;
      return;
    }
    $("message").textContent = "";
    showResults(data);
  } catch (error) {
    if (error.name !== "AbortError" && seq === state.seq) $("message").textContent = "The service cannot be reached.";
  }
}

function formFor(blob, k, category, fields) {
  const form = new FormData();
  form.append("sketch", blob, blob.name || "sketch");
  form.append("k", String(k));
  if (category) form.append("category", category);
  for (const [name, value] of Object.entries(fields)) form.append(name, String(value));
  return form;
}

function showResults(data, emptyText = "Results appear here while you draw.") {
  const grid = $("grid");
  grid.replaceChildren();
  delete $("summary").dataset.query;
  if (!data) {
    $("summary").textContent = emptyText;
    return;
  }
  $("summary").dataset.query = data.query || "";  // which kind of query these results answer
  if (!data.results.length) {
    $("summary").textContent = "No photos found" + (data.category ? ` in category “${data.category}”.` : ".");
    return;
  }
  const t = data.timings_ms || {};
  $("summary").textContent = `${data.results.length} photos (${data.query}) · ${Math.round(t.total || 0)} ms ` +
    `(encode ${Math.round(t.encode || 0)} ms, search ${(t.search || 0).toFixed(1)} ms) · index ${data.index_version}`;
  for (const photo of data.results) {
    const card = document.createElement("div");
    card.className = "result";
    const link = document.createElement("a");
    link.href = photo.url;
    link.target = "_blank";
    link.rel = "noopener";
    const image = document.createElement("img");
    image.src = photo.thumbnail_url;
    image.alt = photo.category || `photo ${photo.id}`;
    image.loading = "lazy";
    image.addEventListener("error", () => card.classList.add("missing"), { once: true });
    const meta = document.createElement("div");
    meta.className = "meta";
    const label = document.createElement("span");
    label.textContent = photo.category || `#${photo.id}`;
    const score = document.createElement("span");
    score.className = "score";
    score.textContent = photo.score.toFixed(3);
    meta.append(label, score);
    link.append(image, meta);
    const more = document.createElement("button");
    more.type = "button";
    more.className = "more";
    more.textContent = "more like this";
    more.dataset.id = String(photo.id);
    more.addEventListener("click", () => moreLike(photo.id));
    card.append(link, more);
    grid.append(card);
  }
}

// ---- start --------------------------------------------------------------------------------------
const INFO_RETRY_MS = 5000;

async function loadInfo() {
  if (!$("api-key").value) $("api-key").value = localStorage.getItem("sbir-api-key") || "";
  try {
    const sent = keyHeaders();
    const info = await (await fetch("/info", { headers: sent })).json();
    state.apiKeyRequired = info.api_key_required;
    if (info.authorized === false) {
      askForKey(sent["X-API-Key"] ? "this API key is not accepted — check it" : "enter the API key to search");
      return;
    }
    $("status").textContent = info.index_version
      ? `index ${info.index_version} · ${info.index_size} photos · ${info.device}`
      : "no index loaded yet — build one with python -m index_builder build";
    if (!info.index_version) setTimeout(loadInfo, INFO_RETRY_MS);  // pick the index up once it is published
    if (info.warning) { $("warning").textContent = info.warning; $("warning").hidden = false; }
    const select = $("category");
    select.replaceChildren(select.options[0]);
    for (const name of info.categories || []) {
      const option = document.createElement("option");
      option.value = option.textContent = name;
      select.append(option);
    }
    const kinds = info.query_kinds || [];
    $("text").hidden = !kinds.includes("text");  // an encoder without a text tower answers no words
    if (info.max_text_chars) $("text").maxLength = info.max_text_chars;
    if (info.text_weight !== undefined && !state.weightSet) {
      $("text-weight").value = String(info.text_weight);
      updateWeightField();
    }
    $("key-field").hidden = !info.api_key_required;
  } catch (error) {
    $("status").textContent = "the service is not reachable";
    setTimeout(loadInfo, INFO_RETRY_MS);
  }
}

window.addEventListener("resize", resizeCanvas);
resizeCanvas();
loadInfo();
