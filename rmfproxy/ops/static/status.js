// rmfproxy status page: polls the admin API, no external assets.
"use strict";
const POLL_MS = 2000;
const THUMB_MS = 5000;
const grid = document.getElementById("grid");
const tiles = new Map();

function el(tag, cls, text) {
  const e = document.createElement(tag);
  if (cls) e.className = cls;
  if (text !== undefined) e.textContent = text;
  return e;
}

function tileFor(cam) {
  let t = tiles.get(cam.id);
  if (t) return t;
  const root = el("section", "tile");
  root.dataset.camera = cam.id;
  const title = el("h2");
  const name = el("span", "name", cam.id);
  const active = el("span", "active");
  title.append(name, active);
  const img = el("img", "thumb");
  img.alt = "latest picture of " + cam.id;
  img.hidden = true;
  const nopic = el("div", "nopic", "no picture yet");
  img.addEventListener("load", () => { img.hidden = false; nopic.hidden = true; });
  img.addEventListener("error", () => { img.hidden = true; nopic.hidden = false; });
  const sources = el("div", "sources");
  const meta = el("div", "meta");
  const switches = el("ol", "switches");
  root.append(title, img, nopic, sources, meta, switches);
  grid.append(root);
  t = { root, active, img, nopic, sources, meta, switches, thumbSource: null, thumbAt: 0 };
  tiles.set(cam.id, t);
  return t;
}

const MERGE_MARK = { aligned: " =", different: " ≠", unknown: " ?" };
const MERGE_TEXT = {
  aligned: "same pictures as the stream: switching is instant",
  different: "another encoding: switching waits for its keyframe",
  unknown: "not matched yet",
};

function render(cam) {
  const t = tileFor(cam);
  const healthy = cam.sources.filter((s) => s.healthy).length;
  t.root.classList.toggle("down", healthy === 0);
  t.root.classList.toggle("degraded", healthy > 0 && healthy < cam.sources.length);
  t.root.dataset.active = cam.active || "";
  t.active.replaceChildren("active: ", el("b", "active-source", cam.active || "none"));
  if (cam.mode === "manual") t.active.append(" (manual)");
  t.sources.replaceChildren(...cam.sources.map((s) => {
    const chip = el("span", "src " + (s.healthy ? "healthy" : "unhealthy") + (s.active ? " is-active" : ""), s.name);
    chip.dataset.source = s.name;
    chip.title = s.healthy ? "healthy" : ("down" + (s.last_loss_reasons.length ? ": " + s.last_loss_reasons.at(-1) : ""));
    if (s.merge) {
      // Observed, not configured: does this source carry the same pictures as the stream?
      chip.dataset.merge = s.merge;
      chip.append(el("small", "merge merge-" + s.merge, MERGE_MARK[s.merge] || ""));
      chip.title += " · " + (MERGE_TEXT[s.merge] || s.merge);
    }
    return chip;
  }));
  const kbps = cam.sources.filter((s) => s.active).map((s) => Math.round(s.bitrate_bps / 1000));
  t.root.classList.toggle("stalled", cam.delivering === false && healthy > 0);
  t.meta.textContent = (cam.delivering === false && healthy > 0 ? "NO VIDEO OUT · " : "") +
    `${cam.clients} client(s)` + (kbps.length ? ` · ${kbps[0]} kbit/s` : "") +
    ` · ${healthy}/${cam.sources.length} sources healthy`;
  t.switches.replaceChildren(...cam.switches.slice(0, 3).map((s) =>
    el("li", "switch", `${s.at.slice(11, 19)} ${s.direction} ${s.from || "-"} → ${s.to} (${s.reason}, gap ${Math.round(s.gap_ms)} ms)`)));
  const src = cam.sources.find((s) => s.active) || cam.sources.find((s) => s.healthy);
  const want = src ? src.thumbnail : null;
  if (want && (want !== t.thumbSource || Date.now() - t.thumbAt >= THUMB_MS)) {
    t.thumbSource = want;
    t.thumbAt = Date.now();
    t.img.dataset.source = src.name;
    t.img.src = want + "?t=" + Date.now();
  } else if (!want) {
    t.img.hidden = true;
    t.nopic.hidden = false;
  }
}

async function poll() {
  try {
    const r = await fetch("/api/v1/cameras", { cache: "no-store" });
    if (!r.ok) throw new Error("HTTP " + r.status);
    const body = await r.json();
    body.cameras.forEach(render);
    const down = body.cameras.filter((c) => !c.healthy).length;
    document.getElementById("summary").textContent =
      `${body.cameras.length} camera(s), ${down} without a healthy source`;
    document.getElementById("updated").textContent = "updated " + new Date().toLocaleTimeString();
    document.getElementById("error").hidden = true;
    document.body.dataset.ready = "1";
  } catch (e) {
    const err = document.getElementById("error");
    err.textContent = "cannot reach the proxy: " + e.message;
    err.hidden = false;
  }
}

poll();
setInterval(poll, POLL_MS);
