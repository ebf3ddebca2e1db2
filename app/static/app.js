// The draw-to-search page: Pointer Events drawing (mouse, touch, pen), undo/clear/brush, upload or
// drag-and-drop (a QuickDraw .ndjson file becomes strokes on the canvas), words that search alone or refine
// the drawing (weight slider), "more like this" on every result, "more results" (the next page, appended), and a
// debounced live search with a busy state. The header follows the service (index version, categories, refused index, unreachable service).
// No framework, no build step, nothing from the network but this service.
"use strict";

const $ = (id) => document.getElementById(id);
const canvas = $("canvas"), pad = $("pad"), ctx = canvas.getContext("2d");
const DEBOUNCE_MS = 250;
const SEARCH_TIMEOUT_MS = 60000;  // a search that takes longer is given up (the busy state must not stay forever)
const MIN_STEP_PX = 1;  // points closer than this to the last one add nothing (a 1 kHz mouse sends many)
const MAX_RETRIES = 3;  // a 503 with Retry-After (busy, index server away) is asked again this many times
// What an HTTP header (and so an API key) can carry: printable ASCII. A pasted key with a zero-width space or a
// curly quote would make every request fail before it is sent.
const KEY_CHARACTERS = /^[\x20-\x7e]+$/;  // (trimmed first: spaces only inside, as the Python client allows)
const KEY_REFUSED = "this API key is not accepted — check it";  // a key was sent, and the service said 401

const state = {
  strokes: [],          // [{width, points: [[x, y], ...]}] in CSS pixels
  current: null,        // the stroke being drawn
  pointerId: null,
  upload: null,         // {blob, image} when the query is an uploaded file (image null: the browser cannot show it)
  like: null,           // id of the photo whose "more like this" is the query (never together with a sketch)
  timer: null,
  controller: null,     // AbortController of the request in flight
  seq: 0,
  apiKeyRequired: false,
  busy: false,          // a search is in flight: "more like this" waits for it
  infoVersion: null,    // the index version the header and the category list describe
  unreachable: false,   // the last request could not reach the service
  weightSet: false,     // the user moved the slider: /info's default no longer applies
  page: null,           // the results on show: {k, category, next (offset of the next page), version, answer}
  maxUploadBytes: null, // the service's upload limit (/info)
  retries: 0,           // 503 answers of the query on screen asked again so far
  padWidth: 0,          // the pad's width in CSS pixels when the strokes were last scaled to it
};

// ---- drawing ------------------------------------------------------------------------------------
function resizeCanvas() {
  const rect = canvas.getBoundingClientRect(), ratio = window.devicePixelRatio || 1;
  // Strokes are kept in CSS pixels: when the pad changes size (a phone turned, a window resized) they scale with it,
  // so the drawing keeps its place on the pad instead of shrinking into a corner. The pad is square.
  if (state.padWidth && rect.width > 0 && rect.width !== state.padWidth) {
    scaleStrokes(state.strokes, rect.width / state.padWidth);
  }
  if (rect.width > 0) state.padWidth = rect.width;
  canvas.width = Math.round(rect.width * ratio);
  canvas.height = Math.round(rect.height * ratio);
  ctx.setTransform(ratio, 0, 0, ratio, 0, 0);
  redraw();
}

function scaleStrokes(strokes, scale) {
  for (const stroke of strokes) {
    stroke.width *= scale;
    stroke.points = stroke.points.map(([x, y]) => [Math.round(x * scale * 10) / 10, Math.round(y * scale * 10) / 10]);
  }
}

function redraw() {
  const rect = canvas.getBoundingClientRect();
  ctx.fillStyle = "#fff";
  ctx.fillRect(0, 0, rect.width, rect.height);
  if (state.upload && state.upload.image) {
    const { image } = state.upload;
    const scale = Math.min(rect.width / image.width, rect.height / image.height);
    const w = image.width * scale, h = image.height * scale;
    ctx.drawImage(image, (rect.width - w) / 2, (rect.height - h) / 2, w, h);
  }
  ctx.strokeStyle = ctx.fillStyle = "#000";
  ctx.lineCap = ctx.lineJoin = "round";
  for (const stroke of state.strokes) drawStroke(stroke);
  $("hint").hidden = state.strokes.length > 0 || state.upload !== null;
  $("pad").title = state.upload && !state.upload.image ? `Uploaded: ${state.upload.blob.name || "a file"}` :
    "Draw here, or drop an image";
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
  const points = state.current.points;
  for (const e of (events.length ? events : [event])) {
    const [x, y] = pointOf(e), [lastX, lastY] = points[points.length - 1];
    if (Math.hypot(x - lastX, y - lastY) >= MIN_STEP_PX) points.push([x, y]);
  }
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
  updateWeightField();  // no words left: the slider goes too
  redraw();
  showResults(null);
  $("message").textContent = "";
  state.seq++;  // an answer still on its way belongs to the cleared query
  if (state.controller) state.controller.abort();
  setBusy(false);
}

$("undo").addEventListener("click", undo);
$("clear").addEventListener("click", clearAll);
document.addEventListener("keydown", (event) => {
  const typing = event.target.closest &&  // the text fields' own undo; menus, slider and checkbox leave it to strokes
    event.target.closest("textarea, [contenteditable], input[type=text], input[type=search], input[type=password]");
  if (typing || event.shiftKey || event.altKey) return;  // text undo in the words box; Ctrl+Shift+Z is redo
  if ((event.ctrlKey || event.metaKey) && event.key.toLowerCase() === "z") { event.preventDefault(); undo(); }
});

// ---- upload and drag-and-drop -------------------------------------------------------------------
function megabytes(bytes) {
  return `${(bytes / 1048576).toFixed(1)} MB`;
}

const DRAWING_HEAD_BYTES = 4 * 1048576;  // where a drawing file's first drawing must end

function isDrawingFile(file) {
  return /\.(ndjson|jsonl|json)$/i.test(file.name || "") || /json/.test(file.type || "");
}

// The strokes of a drawing file (QuickDraw {"drawing": [[xs], [ys], (ts)]...}, the page's own
// {"strokes": [[[x, y], ...]]} or sketch-rnn's offsets {"strokes": [[dx, dy, lifted], ...]}; ndjson: the first
// drawing), or null when the page cannot read them: the service then judges the file and says what is wrong with it.
function strokesOf(text) {
  try {
    const drawing = parseDrawing(text.replace(/^\ufeff/, ""));
    let strokes = null;
    if (Array.isArray(drawing.drawing)) {
      strokes = drawing.drawing.map(([xs, ys]) => xs.map((x, i) => [Number(x), Number(ys[i])]));
    } else if (isOffsetSequence(drawing.strokes)) {
      strokes = offsetStrokes(drawing.strokes);
    } else if (Array.isArray(drawing.strokes)) {
      strokes = drawing.strokes.map((points) => points.map(([x, y]) => [Number(x), Number(y)]));
    }
    strokes = strokes && strokes.filter((points) => points.length);
    const finite = strokes && strokes.flat().every(([x, y]) => Number.isFinite(x) && Number.isFinite(y));
    return strokes && strokes.length && finite ? strokes : null;
  } catch (error) {
    return null;
  }
}

// The whole text as one JSON value (a .json file, pretty-printed or not), else its first line (ndjson).
function parseDrawing(text) {
  try {
    return JSON.parse(text);
  } catch (error) {
    return JSON.parse(text.split(/\r?\n/).find((line) => line.trim()));
  }
}

// sketch-rnn's stroke-3 [dx, dy, lifted] / stroke-5 [dx, dy, down, up, end] rows, as encoder/strokes.py reads them.
function isOffsetSequence(rows) {  // rows of one length, as the service's parser requires
  const width = Array.isArray(rows) && Array.isArray(rows[0]) ? rows[0].length : 0;
  return (width === 3 || width === 5) && rows.every((row) => Array.isArray(row) && row.length === width &&
    row.every((value) => typeof value === "number"));
}

function offsetStrokes(rows) {
  const strokes = [[]];
  let x = 0, y = 0;
  for (const row of rows) {
    x += row[0];
    y += row[1];
    strokes[strokes.length - 1].push([x, y]);
    if (row.length === 5 && row[4] >= 0.5) break;  // the end of the sketch: padding follows
    if ((row.length === 5 ? row[3] : row[2]) >= 0.5) strokes.push([]);  // the pen lifts after this point
  }
  return strokes;
}

// Strokes in any coordinates, fitted into the canvas (aspect ratio kept, a margin around) as the user's own
// drawing: they can be searched, undone stroke by stroke and drawn over.
function fitToCanvas(strokes) {
  const rect = canvas.getBoundingClientRect();
  // A loop, not Math.min(...xs): spreading 100,000+ points overflows the call stack (RangeError).
  let left = Infinity, top = Infinity, right = -Infinity, bottom = -Infinity;
  for (const stroke of strokes) {
    for (const [x, y] of stroke) {
      left = Math.min(left, x); right = Math.max(right, x); top = Math.min(top, y); bottom = Math.max(bottom, y);
    }
  }
  const extent = Math.max(right - left, bottom - top) || 1;
  const scale = 0.85 * Math.min(rect.width, rect.height) / extent;
  const dx = (rect.width - (right - left) * scale) / 2, dy = (rect.height - (bottom - top) * scale) / 2;
  const width = Number($("brush").value);
  return strokes.map((stroke) => ({
    width, points: stroke.map(([x, y]) => [Math.round(((x - left) * scale + dx) * 10) / 10,
      Math.round(((y - top) * scale + dy) * 10) / 10]),
  }));
}

function useUpload(upload) {
  state.strokes = [];
  state.upload = upload;
  setLike(null);
  redraw();
  scheduleSearch(0);
}

async function useFile(file) {
  if (!file) return;
  if (isDrawingFile(file)) {
    // Only the first drawing is needed: a QuickDraw class file of hundreds of MB is not read whole (nor sent).
    const strokes = strokesOf(await file.slice(0, DRAWING_HEAD_BYTES).text());
    if (strokes) {
      state.upload = null;
      setLike(null);
      state.strokes = fitToCanvas(strokes);
      redraw();
      scheduleSearch(0);
      return;
    }
  }
  if (state.maxUploadBytes && file.size > state.maxUploadBytes) {  // refused here, not after the whole upload
    $("message").textContent = `The file is ${megabytes(file.size)}; the service takes at most ` +
      `${megabytes(state.maxUploadBytes)} (SBIR_MAX_UPLOAD_BYTES).`;
    return;
  }
  if (isDrawingFile(file)) {  // not readable here: the service judges it and says what is wrong
    useUpload({ blob: file, image: null });
    return;
  }
  if (await isSvg(file)) {  // drawn only once the service has accepted it: a browser renders an SVG bomb for minutes
    useUpload({ blob: file, image: null, svg: true });
    return;
  }
  // Not displayable here (null): keep it as the query all the same (a change of filter re-runs it); the service
  // judges it.
  loadImage(file, (image) => useUpload({ blob: file, image }));
}

// The browser's picture of `blob`, or null when it cannot show it.
function loadImage(blob, then) {
  const url = URL.createObjectURL(blob), image = new Image();
  image.onload = () => { URL.revokeObjectURL(url); then(image); };
  image.onerror = () => { URL.revokeObjectURL(url); then(null); };
  image.src = url;
}

async function isSvg(file) {
  if (/svg/i.test(file.type || "") || /\.svgz?$/i.test(file.name || "")) return true;
  const head = await file.slice(0, 4096).text();
  return /<svg[\s>]/i.test(head) && !/^\s*[{[]/.test(head);
}

// The SVG upload on the pad, once the service has searched with it (its size and nesting were then within limits).
function previewAcceptedSvg() {
  const upload = state.upload;
  if (!upload || !upload.svg || upload.image || upload.previewing) return;
  upload.previewing = true;
  loadImage(upload.blob, (image) => {
    if (image && state.upload === upload) { upload.image = image; redraw(); }
  });
}

$("file").addEventListener("change", (event) => { useFile(event.target.files[0]); event.target.value = ""; });
for (const name of ["dragenter", "dragover"]) {
  pad.addEventListener(name, (event) => { event.preventDefault(); pad.classList.add("dragging"); });
}
for (const name of ["dragleave", "drop"]) {
  pad.addEventListener(name, (event) => { event.preventDefault(); pad.classList.remove("dragging"); });
}
pad.addEventListener("drop", (event) => useFile(event.dataTransfer.files[0]));
// A file dropped beside the pad would make the browser open it in place of the page (and the drawing).
for (const name of ["dragover", "drop"]) document.addEventListener(name, (event) => event.preventDefault());
for (const id of ["k", "category", "as-photo"]) $(id).addEventListener("change", () => scheduleSearch(0));

// ---- words and "more like this" -----------------------------------------------------------------
function words() {
  return $("text").value.trim();
}

function weight() {
  return Number($("text-weight").value);
}

// The slider matters only when the words are mixed with a drawing, an upload or a liked photo.
function updateWeightField() {
  $("weight-field").hidden = !(words() && (hasInk() || state.upload || state.like !== null));
  $("weight-value").textContent = weight().toFixed(2);
  updateLikeChip();
}

// "More like this" with words typed is one composed query: the chip says so.
function updateLikeChip() {
  $("like-chip").hidden = state.like === null;
  if (state.like === null) return;
  const text = words();
  $("like-text").textContent = `Searching photos like #${state.like}` +
    (text ? ` + the words “${text}” (words weigh ${weight().toFixed(2)})` : "");
}

function setLike(id) {
  state.like = id;
  updateLikeChip();
}

function moreLike(id) {
  if (state.busy) return;  // one query at a time: a second click waits for the first answer
  pushStep();
  state.strokes = [];
  state.upload = null;
  setLike(id);
  redraw();
  setBusy(true);
  scheduleSearch(0);
  $("summary").focus({ preventScroll: true });  // the clicked card goes with the old results: focus what answers
}

// Each "more like this" is a step in the browser's history: Back brings the query it left (the drawing, the upload
// or the photo liked before) with its results, Forward the liked photo again. Words stay as typed. The steps live
// in this page: after a reload, an older step has nothing to restore and the query on screen stays.
const steps = [];  // by history step: {strokes, upload, like, padWidth}, saved when the page leaves that step
let step = Number.isInteger(history.state?.sbirStep) ? history.state.sbirStep : 0;
history.replaceState({ ...history.state, sbirStep: step }, "");

function queryOnScreen() {
  return { strokes: state.strokes, upload: state.upload, like: state.like, padWidth: state.padWidth };
}

function pushStep() {
  steps[step] = queryOnScreen();
  step += 1;
  steps.length = step;  // a new step drops the ones Forward would have reached
  history.pushState({ sbirStep: step }, "");
}

window.addEventListener("popstate", (event) => {
  const to = event.state?.sbirStep;
  if (!Number.isInteger(to) || to === step) return;
  steps[step] = queryOnScreen();
  step = to;
  const saved = steps[to];
  if (!saved) return;
  state.current = null;  // a stroke being drawn belongs to the query left behind
  state.pointerId = null;
  state.strokes = saved.strokes;
  state.upload = saved.upload;
  if (saved.padWidth && state.padWidth && saved.padWidth !== state.padWidth) {  // the pad changed size since
    scaleStrokes(state.strokes, state.padWidth / saved.padWidth);
  }
  setLike(saved.like);
  redraw();
  scheduleSearch(0);
});

$("text").addEventListener("input", () => scheduleSearch());  // search as you type, debounced
$("text-weight").addEventListener("input", () => { state.weightSet = true; scheduleSearch(); });
$("unlike").addEventListener("click", () => {
  setLike(null);  // hides the chip and this button with it: focus goes to what answers the query
  scheduleSearch(0);
  $("summary").focus({ preventScroll: true });
});
$("api-key").addEventListener("change", (event) => {
  const key = event.target.value.trim();
  event.target.value = key;
  if (key && !KEY_CHARACTERS.test(key)) {  // never stored, never sent: it could not travel in a header
    localStorage.removeItem("sbir-api-key");
    askForKey("this API key holds characters no key has (a space, a line break, a curly quote?) — paste it again");
    return;
  }
  localStorage.setItem("sbir-api-key", key);
  loadInfo();  // the categories and index details come with the key
  scheduleSearch(0);
});

// ---- API key ------------------------------------------------------------------------------------
// With a key configured the page asks for it once and sends it on /search and /info; result photos come
// as signed URLs, so <img> needs no header.
function keyHeaders() {
  const key = ($("api-key").value || localStorage.getItem("sbir-api-key") || "").trim();
  return KEY_CHARACTERS.test(key) ? { "X-API-Key": key } : {};  // a key no header carries is not sent at all
}

function askForKey(text) {
  const first = $("key-field").hidden;  // focus the field once, not on every poll (the user may be typing words)
  $("key-field").hidden = false;
  $("status").textContent = text;
  showError(text.charAt(0).toUpperCase() + text.slice(1) + ".");
  if (first && !$("api-key").value) $("api-key").focus({ preventScroll: true });
}

// ---- errors and busy state ------------------------------------------------------------------------
function showError(text) {
  $("error").textContent = text || "";
  $("error").hidden = !text;
}

function setBusy(busy) {
  state.busy = busy;
  $("results").setAttribute("aria-busy", String(busy));
  $("results").classList.toggle("busy", busy);
  $("busy").hidden = !busy;
  for (const button of document.querySelectorAll("#grid .more")) button.disabled = busy;
  $("more-results").disabled = busy;
}

// The service cannot be reached: results on show would pass for current ones, so they go.
function lostService() {
  state.unreachable = true;
  showResults(null, "No results: the service cannot be reached. The page retries by itself.");
  showError("The service cannot be reached — the results were cleared; retrying…");
  $("status").textContent = "the service is not reachable";
}

function regainedService() {
  if (!state.unreachable) return;
  state.unreachable = false;
  showError("");
  scheduleSearch(0);  // the query on screen gets its results again
}

// ---- searching ----------------------------------------------------------------------------------
function scheduleSearch(delay = DEBOUNCE_MS) {
  state.retries = 0;  // a changed query gets its own retries
  updateWeightField();
  setNextPage(null);  // the query is changing: the old results' next page is no longer the one to append
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
function queryFields(mixed, offset) {
  const fields = {}, text = words();
  if (text) fields.text = text;
  if (text && mixed) fields.text_weight = weight();
  if (offset) fields.offset = offset;
  return fields;
}

// The request for what is on screen (its results from `offset` on), or a {message} when there is nothing (yet) to
// search.
function request(k, category, offset = 0) {
  if (state.upload) {
    const fields = { ...queryFields(true, offset), ...($("as-photo").checked ? { as: "photo" } : {}) };
    return { body: formFor(state.upload.blob, k, category, fields), headers: {} };
  }
  if (hasInk() && isDotOnly()) return { message: "Keep drawing: a single dot is not enough to search." };
  if (hasInk() || state.like !== null || words()) {
    const query = hasInk() ? { strokes: state.strokes.map((s) => s.points) } : {};
    if (!hasInk() && state.like !== null) query.like = state.like;
    const body = JSON.stringify({ ...query, ...queryFields(hasInk() || state.like !== null, offset), k, category });
    return { body, headers: { "Content-Type": "application/json" } };
  }
  return { message: "" };
}

// Searches what is on screen; with `more`, asks for the next page of the results on show and appends it.
async function search(more = null) {
  const k = more ? more.k : Number($("k").value), category = more ? more.category : $("category").value || null;
  const next = request(k, category, more ? more.next : 0);
  if (next.body === undefined) {
    state.seq++;
    if (state.controller) state.controller.abort();
    setBusy(false);
    showResults(null);
    $("message").textContent = next.message;
    return;
  }
  const headers = { ...next.headers, ...keyHeaders() };
  if (state.controller) state.controller.abort();
  const controller = new AbortController(), seq = ++state.seq;
  state.controller = controller;
  let timedOut = false;
  const timer = setTimeout(() => { timedOut = true; controller.abort(); }, SEARCH_TIMEOUT_MS);
  setBusy(true);
  try {
    const response = await fetch("/search", { method: "POST", body: next.body, headers, signal: controller.signal });
    const data = await response.json().catch(() => ({}));
    if (seq !== state.seq) return;  // a newer search has started
    if (state.unreachable) { state.unreachable = false; showError(""); }  // this answer is the re-run
    if (!response.ok) {
      const reason = data.detail || `Search failed (HTTP ${response.status}).`;
      const retryAfter = Number(response.headers.get("Retry-After"));
      if (response.status === 503 && retryAfter > 0 && !more && state.retries < MAX_RETRIES) {
        state.retries++;  // busy for a moment: the same query again when the service says, not a dead end
        const wait = Math.min(retryAfter, 10);
        showResults(null, `No results yet: ${reason}`);
        $("message").textContent = `${reason} Asking again in ${wait} s…`;
        clearTimeout(state.timer);
        state.timer = setTimeout(() => search(), wait * 1000);
        return;
      }
      if (response.status === 401) {
        askForKey(headers["X-API-Key"] ? KEY_REFUSED : "an API key is required");
      }
      if (more) {  // the results on show still answer the query on screen: they stay, and the button can retry
        $("message").textContent = `No more results: ${reason}`;
        return;
      }
      showResults(null, `No results: ${reason}`, true);  // never leave an older query's results on show
      $("message").textContent = reason;
      return;
    }
    $("message").textContent = "";
    showError("");  // a search went through: no key or outage problem is current
    if (more && data.index_version !== more.version) {  // the index changed between pages: start over on the new one
      search();
      return;
    }
    if (more) appendResults(data);
    else showResults(data, undefined, false, { k, category });
    previewAcceptedSvg();
    if (data.index_version !== state.infoVersion) loadInfo();  // a hot reload: the header catches up now
  } catch (error) {
    if (seq !== state.seq) return;
    if (timedOut) {  // results on show answer an older query: they go (a hung service also stops the info poll)
      if (!more) showResults(null, "No results: the service did not answer in time.", true);
      $("message").textContent = `No answer within ${SEARCH_TIMEOUT_MS / 1000} s; change the query or try again.`;
    } else if (error.name !== "AbortError") lostService();
  } finally {
    clearTimeout(timer);
    if (seq === state.seq) setBusy(false);
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

// What the results answer, in words: "8 photos like photo #3 and the words “boat” (words weigh 0.30)";
// `count`: the results on show (more than one page's after "more results").
function describe(data, count = data.results.length) {
  const kind = data.query || "", base = kind.split("+")[0];
  const subject = { sketch: "closest to your drawing", photo: "closest to your photo",
    like: `like photo #${data.like}`, text: `for the words “${data.text}”` }[base] || "found";
  const words = kind.endsWith("+text") ? ` and the words “${data.text}”` +
    (data.text_weight != null ? ` (words weigh ${Number(data.text_weight).toFixed(2)})` : "") : "";
  const where = data.category ? ` in category “${data.category}”` : "";
  return `${count} ${count === 1 ? "photo" : "photos"} ${subject}${words}${where}.`;
}

function showResults(data, emptyText = "Results appear here while you draw.", failed = false, asked = null) {
  const grid = $("grid");
  grid.replaceChildren();
  setNextPage(null);
  delete $("summary").dataset.query;
  $("summary").classList.toggle("failed", failed);
  $("details").hidden = !data;
  updateResultsPointer();
  if (!data) {
    $("summary").textContent = emptyText;
    return;
  }
  $("summary").dataset.query = data.query || "";  // which kind of query these results answer
  const t = data.timings_ms || {};
  $("details-text").textContent = `query kind ${data.query} · index version ${data.index_version} · ` +
    `${Math.round(t.total || 0)} ms in all (encode ${Math.round(t.encode || 0)} ms, ` +
    `search ${(t.search || 0).toFixed(1)} ms)`;
  if (!data.results.length) {
    $("summary").textContent = "No photos found" + (data.category ? ` in category “${data.category}”.` : ".");
    return;
  }
  $("summary").textContent = describe(data);
  addCards(data.results);
  if (asked) setNextPage(data.has_more ? { ...asked, next: data.offset + data.k, version: data.index_version,
    answer: data } : null);
  updateResultsPointer();
}

// The next page of the results on show, under them; the summary counts every result on show.
function appendResults(data) {
  const page = state.page;
  if (!page) return;  // the query changed while the next page was on its way: it belongs to no results on show
  addCards(data.results);
  $("summary").textContent = describe(page.answer, $("grid").children.length);
  setNextPage(data.has_more ? { ...page, next: data.offset + data.k } : null);
  updateResultsPointer();
}

// "More results" shows while the service says a next page holds results (`has_more`), and asks for it.
function setNextPage(page) {
  state.page = page;
  $("more-results").hidden = page === null;
}

$("more-results").addEventListener("click", () => {
  if (state.page && !state.busy) search(state.page);
});

function addCards(results) {
  const grid = $("grid");
  for (const photo of results) {
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

// ---- pointing to the results on a small screen --------------------------------------------------
// On a phone the results sit below the canvas and the tools, out of sight: a button says they came and
// scrolls to them, and goes once they are in view.
const toResults = $("to-results");

function updateResultsPointer() {
  const count = $("grid").children.length;
  const inSight = $("grid").getBoundingClientRect().top < window.innerHeight * 0.8;  // a good part shows
  toResults.textContent = `↓ ${count} ${count === 1 ? "result" : "results"}`;
  toResults.hidden = count === 0 || inSight;
}

window.addEventListener("scroll", updateResultsPointer, { passive: true });
toResults.addEventListener("click", () => $("results").scrollIntoView({ behavior: "smooth", block: "start" }));

// ---- the header: the service, its index, its categories ---------------------------------------------
const INFO_POLL_MS = 5000;  // the header follows hot reloads and outages without a search
const INFO_TIMEOUT_MS = 10000;  // an /info without an answer by then: the service is taken as unreachable

function indexStatus(info) {
  const refused = info.index_refused;
  if (info.index_version) {
    const serving = `index ${info.index_version} · ${info.index_size} photos · ${info.device}`;
    return refused ? `${serving} — a newer index version was refused: ${refused}` : serving;
  }
  if (refused) return `index refused, nothing to search: ${refused}`;
  return "no index loaded yet — build one with python -m index_builder build";
}

function setCategories(names) {
  const select = $("category"), chosen = select.value;
  select.replaceChildren(select.options[0]);
  for (const name of names) {
    const option = document.createElement("option");
    option.value = option.textContent = name;
    select.append(option);
  }
  if (chosen && !names.includes(chosen)) {  // the category is gone from the new index: search them all
    select.value = "";
    scheduleSearch(0);
  } else {
    select.value = chosen;
  }
}

// The Results menu offers no count above the service's SBIR_MAX_K (each such search would be refused).
function limitResults(maxK) {
  const select = $("k"), options = () => [...select.options];
  if (!options().some((option) => Number(option.value) === maxK) && options().some((o) => Number(o.value) > maxK)) {
    select.add(new Option(String(maxK)), options().find((option) => Number(option.value) > maxK));
  }
  for (const option of options()) option.hidden = option.disabled = Number(option.value) > maxK;
  if (Number(select.value) > maxK) select.value = String(maxK);
}

async function loadInfo() {
  if (!$("api-key").value) $("api-key").value = localStorage.getItem("sbir-api-key") || "";
  let info;
  try {
    const sent = keyHeaders();
    // a hung service (its socket still open) would hold the poll for ever: it counts as unreachable
    const response = await fetch("/info", { headers: sent, signal: AbortSignal.timeout(INFO_TIMEOUT_MS) });
    info = await response.json();
    regainedService();
    if (!response.ok) {  // starting, or no index it may serve yet (503): say so, and leave the page as it is
      $("status").textContent = info.detail || `the service answered HTTP ${response.status}`;
      return;
    }
    state.apiKeyRequired = info.api_key_required;
    if (info.authorized === false) {
      askForKey(sent["X-API-Key"] ? KEY_REFUSED : "enter the API key to search");
      return;
    }
  } catch (error) {
    lostService();
    return;
  }
  showError("");  // reachable, and the key (if one is needed) is accepted
  state.infoVersion = info.index_version;
  $("status").textContent = indexStatus(info);
  $("status").title = info.index_refused || "";
  $("status").classList.toggle("refused", Boolean(info.index_refused));
  $("warning").textContent = info.warning || "";
  $("warning").hidden = !info.warning;
  setCategories(info.categories || []);
  const kinds = info.query_kinds || [];
  $("text").hidden = !kinds.includes("text");  // an encoder without a text tower answers no words
  if (info.max_text_chars) $("text").maxLength = info.max_text_chars;
  if (info.max_upload_bytes) state.maxUploadBytes = info.max_upload_bytes;
  if (info.max_k) limitResults(info.max_k);
  if (info.text_weight !== undefined && !state.weightSet) {
    $("text-weight").value = String(info.text_weight);
    updateWeightField();
  }
  $("key-field").hidden = !info.api_key_required;
}

async function pollInfo() {
  if (document.visibilityState !== "hidden") await loadInfo();
  setTimeout(pollInfo, INFO_POLL_MS);
}

window.addEventListener("resize", updateResultsPointer);
// The pad changes size without the window too (a scrollbar appears with the results, the column reflows): the canvas
// follows it, or the ink would land away from the pointer.
new ResizeObserver(() => resizeCanvas()).observe(pad);
resizeCanvas();
pollInfo();
