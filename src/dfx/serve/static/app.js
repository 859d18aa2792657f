// The dfx page: each chosen image is sent to /v1/predict on its own, so one unreadable
// file shows its error on its own card and the others still get their verdicts.
"use strict";

const CLASSES = ["dm", "gan", "real"];
const NAMES = { dm: "diffusion", gan: "GAN", real: "real", detector: "detector" };
let threshold = null;

const $ = (selector, root = document) => root.querySelector(selector);

function headers() {
  const token = $("#token").value.trim();
  return token ? { Authorization: `Bearer ${token}` } : {};
}

async function call(path, file) {
  const body = new FormData();
  body.append("files", file, file.name);
  const response = await fetch(path, { method: "POST", body, headers: headers() });
  let data = null;
  try {
    data = await response.json();
  } catch (ignored) {
    // a proxy's HTML error page: reported below by its status
  }
  if (!response.ok) {
    const why = data && data.detail ? (typeof data.detail === "string"
      ? data.detail : JSON.stringify(data.detail)) : response.statusText;
    throw new Error(`${response.status} ${data && data.error ? data.error : ""}: ${why}`);
  }
  return data;
}

function percent(value) {
  return `${(100 * value).toFixed(1)}%`;
}

function bars(list, values, label) {
  list.replaceChildren();
  for (const [key, value] of Object.entries(values)) {
    const item = document.createElement("li");
    const name = document.createElement("span");
    name.textContent = NAMES[key] || key;
    const bar = document.createElement("div");
    bar.className = "bar";
    bar.setAttribute("role", "meter");
    bar.setAttribute("aria-label", `${label} ${NAMES[key] || key}`);
    bar.setAttribute("aria-valuemin", "0");
    bar.setAttribute("aria-valuemax", "1");
    bar.setAttribute("aria-valuenow", String(value));
    const fill = document.createElement("div");
    fill.style.width = percent(value);
    bar.append(fill);
    const text = document.createElement("span");
    text.textContent = percent(value);
    item.append(name, bar, text);
    list.append(item);
  }
}

function showError(card, message) {
  const error = $(".error", card);
  error.textContent = message;
  error.hidden = false;
}

function showPrediction(card, record) {
  const verdict = $(".verdict", card);
  if (record.error) {
    verdict.textContent = "Could not be classified";
    showError(card, record.error);
    return false;
  }
  verdict.textContent = record.fake
    ? `Fake (${NAMES[record.label]})` : `Not fake (most likely ${NAMES[record.label]})`;
  verdict.classList.add(record.fake ? "fake" : "real");
  bars($(".probs", card), Object.fromEntries(CLASSES.map((c) => [c, record.probs[c]])),
    "probability of");
  const track = $(".track", card);
  track.setAttribute("role", "meter");
  track.setAttribute("aria-label", "P(fake)");
  track.setAttribute("aria-valuemin", "0");
  track.setAttribute("aria-valuemax", "1");
  track.setAttribute("aria-valuenow", String(record.p_fake));
  $(".fill", card).style.width = percent(record.p_fake);
  const mark = $(".mark", card);
  if (threshold === null) {
    mark.hidden = true;
  } else {
    mark.style.left = percent(threshold);
  }
  const against = threshold === null ? "" : `, threshold ${threshold.toFixed(3)}`;
  $(".pfake-text", card).textContent =
    `P(fake) ${record.p_fake.toFixed(3)}${against}: ${record.fake ? "fake" : "not fake"}`;
  $(".details", card).hidden = false;
  return true;
}

function picture(key, base64, caption) {
  const figure = document.createElement("figure");
  if (key === "sheet") figure.className = "sheet";
  const image = document.createElement("img");
  image.src = `data:image/png;base64,${base64}`;
  image.alt = caption;
  const text = document.createElement("figcaption");
  text.textContent = caption;
  figure.append(image, text);
  return figure;
}

async function toggleExplanation(card, file) {
  const button = $(".explain", card);
  const panel = $(".explanation", card);
  const open = button.getAttribute("aria-expanded") !== "true";
  button.setAttribute("aria-expanded", String(open));
  button.textContent = open ? "Hide explanation" : "Show explanation";
  panel.hidden = !open;
  card.classList.toggle("explained", open);  // the overlays get the whole row
  if (open) await loadExplanation(card, file);
}

async function loadExplanation(card, file) {
  const panel = $(".explanation", card);
  const method = $("#method").value;
  if (panel.dataset.loaded === method) return;  // shown again as it was
  delete panel.dataset.loaded;
  const status = $(".explain-status", card);
  const overlays = $(".overlays", card);
  status.textContent = "Explaining…";
  try {
    const record = await call(`/v1/explain?method=${encodeURIComponent(method)}`, file);
    panel.dataset.loaded = method;
    const error = $(".error", card);
    if (error.textContent.startsWith("Explanation failed")) error.hidden = true;
    status.textContent = `Maps of the evidence for ${NAMES[record.target] || record.target} `
      + `(${record.method}); a map shows where a model looked, not proof.`;
    if (record.shares) {
      bars($(".shares", card), record.shares, "share of");
    } else {
      $(".shares", card).previousElementSibling.hidden = true;
    }
    overlays.replaceChildren();
    for (const [key, base64] of Object.entries(record.images)) {
      const caption = key === "sheet" ? "Contact sheet" : `${NAMES[key] || key} specialist`;
      overlays.append(picture(key, base64, caption));
    }
  } catch (error) {
    status.textContent = "";
    overlays.replaceChildren();  // no maps of another method left beside the error
    $(".shares", card).replaceChildren();
    showError(card, `Explanation failed: ${error.message}`);
  }
}

async function classify(file) {
  const card = $("#card-template").content.firstElementChild.cloneNode(true);
  $(".name", card).textContent = file.name;
  const thumb = $(".thumb", card);
  thumb.alt = `Thumbnail of ${file.name}`;
  thumb.src = URL.createObjectURL(file);
  // An unreadable file has no thumbnail to show; its error says why.
  thumb.addEventListener("error", () => { thumb.hidden = true; });
  $(".explain", card).addEventListener("click", () => toggleExplanation(card, file));
  // Another method chosen while this card's explanation is open: show that one instead.
  $("#method").addEventListener("change", () => {
    if ($(".explain", card).getAttribute("aria-expanded") === "true") loadExplanation(card, file);
  });
  $("#cards").prepend(card);
  try {
    const [record] = await call("/v1/predict", file);
    showPrediction(card, record);
  } catch (error) {
    $(".verdict", card).textContent = "Could not be classified";
    showError(card, error.message);
  }
}

async function classifyAll(files) {
  const list = Array.from(files);
  if (!list.length) return;
  $("#status").textContent = `Classifying ${list.length} image(s)…`;
  await Promise.all(list.map(classify));
  $("#status").textContent = `Classified ${list.length} image(s).`;
}

async function describeModel() {
  const model = $("#model");
  try {
    const response = await fetch("/v1/model", { headers: headers() });
    const data = await response.json();
    if (!response.ok) {
      model.textContent = response.status === 401
        ? "The service asks for a token: enter it under Access token."
        : `Model not ready: ${data.detail}`;
      return;
    }
    threshold = data.model.threshold.value;
    model.textContent = `Model ${data.model.name || ""} (${data.model.architecture}, `
      + `${data.model.backbone}); fake when P(fake) ≥ ${threshold.toFixed(3)}; dfx ${data.dfx_version}`;
  } catch (error) {
    model.textContent = `The service did not answer: ${error.message}`;
  }
}

function setUp() {
  const drop = $("#drop");
  const input = $("#files");
  input.addEventListener("change", () => {
    classifyAll(input.files);
    input.value = "";
  });
  for (const kind of ["dragenter", "dragover"]) {
    drop.addEventListener(kind, (event) => {
      event.preventDefault();
      drop.classList.add("over");
    });
  }
  for (const kind of ["dragleave", "drop"]) {
    drop.addEventListener(kind, () => drop.classList.remove("over"));
  }
  drop.addEventListener("drop", (event) => {
    event.preventDefault();
    classifyAll(event.dataTransfer.files);
  });
  $("#token").addEventListener("change", describeModel);
  describeModel();
}

document.addEventListener("DOMContentLoaded", setUp);
