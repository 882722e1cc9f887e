// rmfproxy status page: polls the admin API, no external assets.
"use strict";
const POLL_MS = 2000;
const PLAN_MS = 60000;
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
  const tl = timelineFor(cam.id);
  root.append(title, img, nopic, sources, meta, tl.root, switches);
  grid.append(root);
  t = { root, active, img, nopic, sources, meta, switches, tl, thumbSource: null, thumbAt: 0 };
  tiles.set(cam.id, t);
  return t;
}

const MERGE_MARK = { aligned: " =", different: " ≠", unknown: " ?" };
const MERGE_TEXT = {
  aligned: "same pictures as the stream: switching is instant",
  different: "another encoding: switching waits for its keyframe",
  unknown: "not matched yet",
};

const STANDBY_TEXT = {
  paused: "session kept, no media",
  substream: "pulling its low-rate sub-stream",
  disconnected: "not connected",
  starting: "promoted, media starting",
  flowing: "pulled",
};

// A warm or cold source standing by as configured: neither healthy nor a fault.
function standingBy(s) {
  if (!s.standby || s.standby.mode === "hot" || s.active || s.healthy) return false;
  const st = s.standby.state;
  return st === "paused" || st === "substream" || (s.standby.mode === "cold" && st === "disconnected");
}

function render(cam) {
  const t = tileFor(cam);
  const healthy = cam.sources.filter((s) => s.healthy).length;
  const expected = cam.sources.filter((s) => !standingBy(s)).length;
  t.root.classList.toggle("down", healthy === 0);
  t.root.classList.toggle("degraded", healthy > 0 && healthy < expected);
  t.root.dataset.active = cam.active || "";
  t.active.replaceChildren("active: ", el("b", "active-source", cam.active || "none"));
  if (cam.mode === "manual") t.active.append(" (manual)");
  t.sources.replaceChildren(...cam.sources.map((s) => {
    const idle = standingBy(s);
    const look = s.healthy ? "healthy" : idle ? "standby" : "unhealthy";
    const chip = el("span", "src " + look + (s.active ? " is-active" : ""), s.name);
    chip.dataset.source = s.name;
    chip.title = s.healthy ? "healthy" : idle ? "standing by" : ("down" + (s.last_loss_reasons.length ? ": " + s.last_loss_reasons.at(-1) : ""));
    if (s.standby && s.standby.mode !== "hot") {
      // Warm/cold: pulled only while needed; the chip says what its connection does now.
      chip.dataset.standby = s.standby.state;
      chip.append(el("small", "standby-mode", " " + s.standby.mode + "·" + s.standby.state));
      chip.title += " · " + s.standby.mode + " standby: " + (STANDBY_TEXT[s.standby.state] || s.standby.state);
    }
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
  t.root.classList.toggle("conflict", !!cam.sync_conflict);
  t.root.dataset.conflict = cam.sync_conflict ? "1" : "";
  t.meta.textContent = (cam.sync_conflict ? "CONFIG CONFLICT with the peer proxy · " : "") +
    (cam.delivering === false && healthy > 0 ? "NO VIDEO OUT · " : "") +
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
  refreshCoverage(cam.id, t.tl);
}

// Archive timeline under each tile: which recorder covered which minutes, from the
// coverage journal (GET /api/v1/cameras/{id}/coverage). Without a journal the API answers
// 503 and the page shows no timeline (asked once, then never again).
const COVERAGE_MS = 12000; // the journal changes slowly: not on every 2 s poll
const LOOKBACK_S = 30 * 86400; // how far back "does the journal have older data?" looks
// The journal's intervals run from the first to the last health sample (every 0.5 s), so
// a source's first interval starts a moment after the proxy connected, and open intervals
// end a moment before now: such slivers at the edges of the data are not drawn as gaps.
const EDGE_MS = 2000;
const SPAN_MS = 60000; // a click selects the minute around it
const HOUR_CHOICES = [1, 6, 24];
const TICK_STEPS_S = [5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 10800, 21600];
let archive = "unknown"; // "on" once a coverage answer came, "off" after a 503 without one
let probing = false;
let hours = initialHours();

function initialHours() {
  // ?hours=N (0 < N <= 168) links to another window; the menu offers 1, 6 and 24 h.
  const h = Number(new URLSearchParams(location.search).get("hours"));
  return Number.isFinite(h) && h > 0 && h <= 168 ? h : 1;
}

function setupHoursMenu() {
  const menu = document.getElementById("tl-hours");
  const choices = HOUR_CHOICES.includes(hours) ? HOUR_CHOICES : [...HOUR_CHOICES, hours];
  menu.replaceChildren(...choices.sort((a, b) => a - b).map((h) => {
    const o = el("option", null, h >= 1 ? `${h} h` : fmtDur(h * 3600000));
    o.value = String(h);
    o.selected = h === hours;
    return o;
  }));
  menu.addEventListener("change", () => {
    hours = Number(menu.value);
    for (const t of tiles.values()) {
      t.tl.at = 0;
      t.tl.known = false; // the journal may begin inside the longer window
      refreshCoverage(t.root.dataset.camera, t.tl);
    }
  });
}

const pad = (n) => String(n).padStart(2, "0");
function fmtTime(ms, seconds = true) {
  const d = new Date(ms);
  return `${pad(d.getHours())}:${pad(d.getMinutes())}` + (seconds ? `:${pad(d.getSeconds())}` : "");
}
function fmtDur(ms) {
  const s = ms / 1000;
  if (s < 120) return `${Math.round(s * 10) / 10} s`;
  if (s < 7200) return `${Math.round(s / 6) / 10} min`;
  return `${Math.round(s / 360) / 10} h`;
}
const iso = (ms) => new Date(ms).toISOString();
const pct = (r) => `${Math.round(r * 1000) / 10}%`;

function coverageUrl(cam, startMs, endMs) {
  return `/api/v1/cameras/${encodeURIComponent(cam)}/coverage?start=` +
    encodeURIComponent(iso(startMs)) + "&end=" + encodeURIComponent(iso(endMs));
}
function recordingUrl(cam, startMs, endMs) {
  return `/api/v1/cameras/${encodeURIComponent(cam)}/recording.mp4?start=` +
    encodeURIComponent(iso(startMs)) + "&end=" + encodeURIComponent(iso(endMs));
}

function timelineFor(cam) {
  const root = el("div", "timeline");
  root.hidden = true;
  root.setAttribute("role", "group");
  const rows = el("div", "tl-rows");
  const hover = el("div", "tl-hover", "\u00a0");
  const span = el("div", "tl-span");
  span.hidden = true;
  span.setAttribute("aria-live", "polite");
  const spanText = el("span", "tl-span-text");
  const spanNumbers = el("span", "tl-span-numbers");
  const link = el("a", "tl-download", "download MP4");
  span.append(spanText, " ", spanNumbers, " ", link);
  const head = el("div", "tl-head");
  head.append(el("span", "tl-title", "archive"), hover);
  root.append(head, rows, span);
  const tl = { root, rows, hover, span, spanText, spanNumbers, link, report: null, at: 0,
    busy: false, known: false, firstData: null, ws: 0, we: 0, sel: null, drag: null, spanReq: 0 };
  rows.addEventListener("mousemove", (ev) => onHover(tl, ev));
  rows.addEventListener("mouseleave", () => { tl.hover.textContent = "\u00a0"; });
  rows.addEventListener("mousedown", (ev) => {
    const t = timeAt(tl, ev);
    if (t !== null) { tl.drag = { x: ev.clientX, t }; ev.preventDefault(); }
  });
  window.addEventListener("mouseup", (ev) => {
    if (!tl.drag) return;
    const drag = tl.drag;
    tl.drag = null;
    const t = timeAt(tl, ev, true);
    if (Math.abs(ev.clientX - drag.x) > 3) select(cam, tl, Math.min(drag.t, t), Math.max(drag.t, t));
    else selectAround(cam, tl, drag.t);
  });
  return tl;
}

// The time under the pointer, from the bars' common horizontal extent (null off the bars).
function timeAt(tl, ev, clamp = false) {
  const bar = tl.rows.querySelector(".tl-bar");
  if (!bar || tl.we <= tl.ws) return null;
  const r = bar.getBoundingClientRect();
  let f = (ev.clientX - r.left) / r.width;
  if (f < 0 || f > 1) {
    if (!clamp) return null;
    f = Math.min(1, Math.max(0, f));
  }
  return tl.ws + f * (tl.we - tl.ws);
}

const covers = (ivs, t) => ivs.some(([s, e]) => s <= t && t < e);

function onHover(tl, ev) {
  const t = timeAt(tl, ev);
  if (t === null || !tl.report) { tl.hover.textContent = "\u00a0"; return; }
  let what;
  if (tl.firstData === null || t < tl.firstData) what = "no data";
  else {
    const by = Object.entries(tl.report.sources).filter(([, ivs]) => covers(ivs, t)).map(([n]) => n);
    what = by.length ? "recorded by " + by.join(", ") : "no recorder";
  }
  tl.hover.textContent = `${fmtTime(t)} · ${what}`;
}

function selectAround(cam, tl, t) {
  let s = t - SPAN_MS / 2;
  let e = t + SPAN_MS / 2;
  // Keep the whole minute inside the window (nothing is recorded after now).
  if (e > tl.we) { s -= e - tl.we; e = tl.we; }
  if (s < tl.ws) s = tl.ws;
  select(cam, tl, s, e, t);
}

async function select(cam, tl, s, e, at = null) {
  s = Math.round(s);
  e = Math.round(e);
  if (e <= s) return;
  tl.sel = [s, e];
  drawSelection(tl);
  tl.span.hidden = false;
  if (at === null) delete tl.span.dataset.at;
  else tl.span.dataset.at = iso(at); // the clicked time
  tl.span.dataset.start = iso(s);
  tl.span.dataset.end = iso(e);
  tl.spanText.textContent = `${fmtTime(s)}–${fmtTime(e)} (${fmtDur(e - s)}):`;
  tl.link.href = recordingUrl(cam, s, e);
  tl.link.download = `${cam}-${iso(s).replace(/[:.]/g, "")}.mp4`;
  tl.link.setAttribute("aria-label", `download ${cam} from ${fmtTime(s)} to ${fmtTime(e)} as MP4`);
  tl.spanNumbers.textContent = "…";
  delete tl.spanNumbers.dataset.ratios;
  const req = ++tl.spanReq;
  try {
    const r = await fetch(coverageUrl(cam, s, e), { cache: "no-store" });
    if (!r.ok) throw new Error("HTTP " + r.status);
    const body = await r.json();
    if (req !== tl.spanReq) return; // another span was selected meanwhile
    const ratios = Object.entries(body.coverage_ratio).map(([n, v]) =>
      `${n === "merged" ? "all" : n} ${pct(v)}`);
    tl.spanNumbers.dataset.ratios = JSON.stringify(body.coverage_ratio);
    tl.spanNumbers.textContent = ratios.join(" · ") +
      (body.gaps.length ? ` · ${body.gaps.length} gap(s) no recorder covers` : "") + " ·";
  } catch (err) {
    if (req === tl.spanReq) tl.spanNumbers.textContent = `(coverage unknown: ${err.message}) ·`;
  }
}

function drawSelection(tl) {
  tl.rows.querySelectorAll(".tl-sel").forEach((n) => n.remove());
  if (!tl.sel || tl.we <= tl.ws) return;
  const [s, e] = [Math.max(tl.sel[0], tl.ws), Math.min(tl.sel[1], tl.we)];
  if (e <= s) return;
  for (const bar of tl.rows.querySelectorAll(".tl-bar")) {
    const mark = el("div", "tl-sel");
    place(tl, mark, s, e);
    bar.append(mark);
  }
}

function place(tl, node, s, e) {
  const w = tl.we - tl.ws;
  node.style.left = `${((s - tl.ws) / w) * 100}%`;
  node.style.width = `${((e - s) / w) * 100}%`;
}

// Covered, gap and no-data segments of one bar over [ws, we); ``from`` is where data starts.
function segments(ivs, ws, we, from) {
  const out = [];
  let cur = ws;
  if (from > ws) {
    cur = Math.min(from, we);
    out.push(["nodata", ws, cur]);
  }
  for (const [s, e] of ivs) {
    if (e <= cur) continue;
    if (s > cur) out.push(["gap", cur, s]);
    out.push(["covered", Math.max(s, cur), e]);
    cur = e;
  }
  if (cur < we) out.push([we - cur < EDGE_MS ? "edge" : "gap", cur, we]);
  return out;
}

const SEG_TEXT = { covered: "recorded", gap: "gap", nodata: "no data", edge: "now" };

function bar(tl, name, label, ivs, ratio) {
  const row = el("div", "tl-row" + (name === null ? " tl-merged" : ""));
  const b = el("div", "tl-bar");
  b.dataset.source = name === null ? "" : name;
  b.setAttribute("role", "img");
  // Where this source's first sample came just after the data began, it was connecting.
  let from = tl.firstData === null ? tl.we : tl.firstData;
  if (ivs.length && ivs[0][0] >= from && ivs[0][0] - from < EDGE_MS) from = ivs[0][0];
  const segs = segments(ivs, tl.ws, tl.we, from);
  const gaps = segs.filter(([k]) => k === "gap");
  b.setAttribute("aria-label", `${label}: ${pct(ratio)} of the last ${fmtDur(tl.we - tl.ws)} recorded, ` +
    `${gaps.length} gap(s)` + (gaps.length ? ": " + gaps.map(([, s, e]) => `${fmtTime(s)}–${fmtTime(e)}`).join(", ") : ""));
  for (const [kind, s, e] of segs) {
    const seg = el("div", "tl-seg " + kind);
    seg.dataset.start = iso(s);
    seg.dataset.end = iso(e);
    seg.title = `${label} ${SEG_TEXT[kind]} ${fmtTime(s)}–${fmtTime(e)} (${fmtDur(e - s)})`;
    place(tl, seg, s, e);
    b.append(seg);
  }
  const tag = el("span", "tl-name", label);
  tag.title = name === null ? "all recorders together" : label;
  row.append(tag, b);
  return row;
}

function ticks(tl) {
  const row = el("div", "tl-row");
  const axis = el("div", "tl-ticks");
  axis.setAttribute("aria-hidden", "true");
  const span = (tl.we - tl.ws) / 1000;
  const step = (TICK_STEPS_S.find((s) => span / s <= 5) || 43200) * 1000;
  for (let t = Math.ceil(tl.ws / step) * step; t <= tl.we; t += step) {
    const tick = el("span", "tl-tick", fmtTime(t, step < 60000));
    tick.dataset.t = iso(t);
    tick.style.left = `${((t - tl.ws) / (tl.we - tl.ws)) * 100}%`;
    axis.append(tick);
  }
  row.append(el("span", "tl-name"), axis);
  return row;
}

function drawTimeline(cam, tl) {
  const rep = tl.report;
  tl.root.dataset.start = iso(tl.ws);
  tl.root.dataset.end = iso(tl.we);
  tl.root.dataset.firstData = tl.firstData === null ? "" : iso(tl.firstData);
  tl.root.setAttribute("aria-label", `archive coverage of ${cam}, last ${fmtDur(tl.we - tl.ws)}`);
  const rows = Object.entries(rep.sources).map(([n, ivs]) => bar(tl, n, n, ivs, rep.coverage_ratio[n]));
  rows.push(bar(tl, null, "all", rep.merged, rep.coverage_ratio.merged), ticks(tl));
  tl.rows.replaceChildren(...rows);
  drawSelection(tl);
  tl.root.hidden = false;
}

const toMs = (ivs) => ivs.map(([s, e]) => [Date.parse(s), Date.parse(e)]);

async function getCoverage(cam, startMs, endMs) {
  const r = await fetch(coverageUrl(cam, startMs, endMs), { cache: "no-store" });
  if (r.status === 503 && archive !== "on") return null; // no journal configured
  if (!r.ok) throw new Error("HTTP " + r.status);
  const body = await r.json();
  body.merged = toMs(body.merged);
  for (const n of Object.keys(body.sources)) body.sources[n] = toMs(body.sources[n]);
  return body;
}

async function refreshCoverage(cam, tl) {
  if (archive === "off" || tl.busy || Date.now() - tl.at < COVERAGE_MS) return;
  if (archive === "unknown") {
    if (probing) return; // one camera asks first: no 503 per camera without a journal
    probing = true;
  }
  tl.busy = true;
  tl.at = Date.now();
  try {
    const asked = hours;
    const we = Date.now();
    const ws = we - asked * 3600000;
    const rep = await getCoverage(cam, ws, we);
    if (rep === null) {
      archive = "off";
      for (const t of tiles.values()) t.tl.root.remove();
      return;
    }
    if (archive !== "on") {
      archive = "on";
      document.getElementById("tl-choice").hidden = false;
      // The other cameras were waiting for this answer: ask for theirs now.
      for (const [id, t] of tiles) if (t.tl !== tl) refreshCoverage(id, t.tl);
    }
    if (asked !== hours) {
      tl.at = 0; // the window changed meanwhile: ask again at the next poll
      return;
    }
    if (!tl.known) {
      // Time before the journal's first record is "no data", not a gap: find that record.
      // (Covered at the window's start: data begins at or before it, enough for this window.)
      if (rep.merged.length && rep.merged[0][0] <= ws) tl.firstData = ws;
      else {
        const older = await getCoverage(cam, ws - LOOKBACK_S * 1000, ws);
        tl.firstData = older.merged.length ? older.merged[0][0] : rep.merged.length ? rep.merged[0][0] : null;
      }
      tl.known = tl.firstData !== null;
    }
    Object.assign(tl, { report: rep, ws, we });
    tl.root.classList.remove("tl-failed");
    drawTimeline(cam, tl);
  } catch (err) {
    tl.root.classList.add("tl-failed");
    tl.hover.textContent = "coverage unavailable: " + err.message;
  } finally {
    tl.busy = false;
    probing = false;
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

// The M->N coverage plan of the running configuration: does every single recorder
// failure leave every camera a source? (GET /api/v1/plan, as `rmfproxy plan`.)
async function pollPlan() {
  const chip = document.getElementById("plan");
  try {
    const r = await fetch("/api/v1/plan", { cache: "no-store" });
    if (!r.ok) throw new Error("HTTP " + r.status);
    const plan = await r.json();
    chip.dataset.ok = plan.ok ? "true" : "false";
    chip.classList.toggle("plan-bad", !plan.ok);
    chip.textContent = plan.ok
      ? "plan: every single recorder failure covered"
      : `plan: ${plan.uncovered.length} camera(s) uncovered by a single failure` +
        (plan.uncovered.length ? " (" + plan.uncovered.slice(0, 5).join(", ") + ")" : "");
    chip.title = (plan.findings || []).map((f) => f.message || JSON.stringify(f)).join("\n");
  } catch (e) {
    chip.dataset.ok = "";
    chip.textContent = "plan unavailable";
  }
  chip.hidden = false;
}

setupHoursMenu();
poll();
setInterval(poll, POLL_MS);
pollPlan();
setInterval(pollPlan, PLAN_MS);
