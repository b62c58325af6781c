
"use strict";
const TOKEN_KEY = "tusk.apiToken";
const MAX_TRIGGERS = 200;
const $ = (sel) => document.querySelector(sel);
let token = sessionStorage.getItem(TOKEN_KEY) || "";
let needToken = false;
let lastLookup = null;
let tail = {epoch: null, last: 0};

class Unauthorized extends Error {}

async function api(path) {
  const headers = {"Accept": "application/json"};
  if (token) headers["Authorization"] = "Bearer " + token;
  const resp = await fetch(path, {headers, cache: "no-store"});
  if (resp.status === 401) {
    askToken(token ? "That token was refused." : "");
    throw new Unauthorized();
  }
  let body = null;
  try { body = await resp.json(); } catch (e) { body = null; }
  return {status: resp.status, body};
}

function el(tag, props, ...kids) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(props || {})) {
    if (k === "class") node.className = v;
    else if (k === "text") node.textContent = v;
    else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else node.setAttribute(k, v);
  }
  for (const kid of kids) {
    if (kid !== null && kid !== undefined) node.append(kid instanceof Node ? kid : String(kid));
  }
  return node;
}

function fmt(v) {
  if (v === null || v === undefined || v === "") return "\u2014";
  if (typeof v === "object") return JSON.stringify(v);
  return String(v);
}

function clock() { return new Date().toLocaleTimeString(); }

function when(iso) {  // "2024-05-01 11:00:00" (UTC), the full ISO-8601 time in the tooltip
  if (!iso) return "—";
  const m = /^(\d{4}-\d\d-\d\d)T(\d\d:\d\d:\d\d)/.exec(String(iso));
  return el("time", {datetime: String(iso), title: String(iso) + " (UTC)"},
    m ? m[1] + " " + m[2] : String(iso));
}

function table(headers, rows, numeric) {
  if (!rows.length) return el("div", {class: "muted small", text: "none"});
  const num = new Set(numeric || []);
  return el("table", {},
    el("thead", {}, el("tr", {}, ...headers.map((h, i) => el("th", {class: num.has(i) ? "num" : ""}, h)))),
    el("tbody", {}, ...rows.map((r) => el("tr", {},
      ...r.map((c, i) => el("td", {class: num.has(i) ? "num" : ""}, c instanceof Node ? c : fmt(c)))))));
}

function kv(obj, render) {
  const rows = Object.entries(obj || {}).sort(([a], [b]) => a.localeCompare(b));
  return table(["name", "value"], rows.map(([k, v]) => [el("code", {text: k}), render ? render(v) : fmt(v)]));
}

function badge(text, cls) { return el("span", {class: "badge " + (cls || text), text: text}); }

function askToken(message) {
  needToken = true;
  $("#token-panel").hidden = false;
  $("#token-error").textContent = message || "";
  $("#auth-state").textContent = "API token needed";
  $("#forget-token").hidden = !token;
  $("#token-input").focus();
}

function tokenAccepted() {
  if (!needToken) $("#auth-state").textContent = token ? "signed in with an API token" : "";
  $("#forget-token").hidden = !token;
}

function section(card, title, content, id) {
  card.append(el("div", {id: "profile-" + id}, el("h3", {text: title}), content));
}

function renderProfile(p) {
  const card = $("#profile");
  card.replaceChildren();
  card.hidden = false;
  card.append(el("h2", {}, "Profile ", el("code", {text: p.id}), badge(p.kind || "person", "kind"),
    el("button", {class: "quiet small", type: "button", onclick: () => lookup(lastLookup)}, "Refresh")));
  const facts = [["first seen", when(p.first_seen)], ["last seen", when(p.last_seen)],
                 ["events", p.event_count], ["merged from", (p.merged_from || []).join(", ")]];
  card.append(el("div", {class: "facts"},
    ...facts.map(([k, v]) => el("div", {}, el("span", {text: k}), v instanceof Node ? v : fmt(v)))));
  const ids = Object.entries(p.identities || {}).sort(([a], [b]) => a.localeCompare(b));
  section(card, "Identities", table(["type", "values"], ids.map(([k, vs]) =>
    [el("code", {text: k}), el("div", {}, ...vs.map((v) => el("span", {class: "chip", text: v})))])),
    "identities");
  const segs = Object.entries(p.segments || {}).sort(([a], [b]) => a.localeCompare(b));
  section(card, "Segments", table(["segment", "entered at"],
    segs.map(([id, s]) => [el("strong", {text: id}), when((s || {}).entered_at)])), "segments");
  section(card, "Computed traits", kv(p.computed), "computed");
  const sources = p.trait_sources || {};
  section(card, "Traits", table(["name", "value", "source"],
    Object.entries(p.traits || {}).sort(([a], [b]) => a.localeCompare(b)).map(([k, v]) =>
      [el("code", {text: k}), fmt(v), (sources[k] || {}).source || ""])), "traits");
  if (p.predictions) section(card, "Predictions", kv(p.predictions), "predictions");
  section(card, "Consent", kv(p.consent, (v) => v === true ? badge("granted") :
    v === false ? badge("denied") : fmt(v)), "consent");
  section(card, "Subscriptions", kv(p.subscriptions, (v) => badge(fmt(v))), "subscriptions");
  section(card, "Memberships", table(["account", "group", "role", "since", "until"],
    (p.memberships || []).map((m) => [el("code", {text: fmt(m.account_id)}), m.group_id, m.role,
      when(m.since), m.until ? when(m.until) : "current"])), "memberships");
  section(card, "Recent events", table(["time", "type", "event / name", "message id"],
    (p.recent_events || []).map((e) => [when(e.ts), e.type, e.event || e.name,
      el("code", {text: fmt(e.messageId)})])), "events");
}

async function explainProfile(path) {  // GET .../explain: why each identifier, merge, segment
  let r;
  try { r = await api(path + "/explain"); } catch (e) { return; }
  if (r.status !== 200 || !r.body) return;
  const x = r.body;
  const card = $("#profile");
  section(card, "Why these identifiers", table(["identifier", "linked by event", "through"],
    x.identifiers.map((i) => [el("code", {text: i.type + ":" + i.value}),
      i.linked_by ? el("span", {}, el("code", {text: fmt(i.linked_by.messageId)}),
        " " + i.linked_by.event_type + " ", when(i.linked_by.time)) : "(before provenance)",
      i.through ? el("code", {text: i.through}) : "-"])), "why-identifiers");
  section(card, "Merges", table(["merged", "into", "through", "linking event", "at"],
    x.merges.map((m) => [el("code", {text: m.merged}), el("code", {text: m.survivor}),
      m.through ? el("code", {text: m.through}) : "-",
      m.event ? el("code", {text: fmt(m.event.messageId)}) : "-", when(m.at)])), "why-merges");
  section(card, "Why in these segments", el("div", {}, ...x.segments.map((sg) =>
    el("div", {}, el("strong", {text: sg.segment}),
      el("ul", {}, ...sg.conditions.map((c) => el("li", {text: c.text})))))), "why-segments");
}

async function lookup(q) {
  if (!q) return;
  lastLookup = q;
  const path = q.type === "id" ? "/profiles/id/" + encodeURIComponent(q.value)
    : "/profiles/" + encodeURIComponent(q.type) + "/" + encodeURIComponent(q.value);
  const status = $("#lookup-status");
  status.textContent = "Looking up\u2026";
  status.className = "muted small";
  let r;
  try { r = await api(path); } catch (e) {
    status.textContent = e instanceof Unauthorized ? "Enter the API token above, then look up again."
      : "The worker does not answer.";
    return;
  }
  if (r.status === 200 && r.body) {
    status.textContent = "Found at " + clock() + ".";
    renderProfile(r.body);
    explainProfile(path);
    return;
  }
  $("#profile").hidden = true;
  status.className = "error small";
  status.textContent = (r.body && r.body.message) || ("HTTP " + r.status);
}

async function refreshSegments() {
  const r = await api("/segments");
  const body = $("#segments-table tbody");
  if (r.status !== 200 || !r.body) {
    $("#segments-status").textContent = (r.body && r.body.message) || ("HTTP " + r.status);
    return;
  }
  const segs = r.body.segments || [];
  body.replaceChildren(...segs.map((s) => el("tr", {"data-segment": s.id},
    el("td", {}, el("strong", {text: s.id})),
    el("td", {class: "num", text: fmt(s.size)}),
    el("td", {text: (s.destinations || []).map((d) => d.channel).join(", ") || "\u2014"}))));
  $("#segments-status").textContent = segs.length ? "" : "No segments defined yet.";
  $("#segments-updated").textContent = "live \u00b7 updated " + clock();
}

async function refreshJourneys() {
  const r = await api("/journeys");
  if (r.status !== 200 || !r.body) {
    $("#journeys-status").textContent = (r.body && r.body.message) || ("HTTP " + r.status);
    return;
  }
  const js = r.body.journeys || [];
  // each journey as a funnel: one row per step, the bar is how many reached it
  $("#journeys").replaceChildren(...js.map((j) => {
    const top = Math.max(1, ...j.steps_live.map((s) => s.entered));
    const cols = ["entered", "waiting", "converted", "exited"];
    const title = el("strong", {text: j.id + " · " + fmt(j.active) + " in it"});
    return el("table", {"data-journey": j.id},
      el("thead", {}, el("tr", {}, el("th", {}, title),
        ...cols.map((k) => el("th", {class: "num", text: k})))),
      el("tbody", {}, ...j.steps_live.map((s) => el("tr", {"data-step": s.step},
        el("td", {title: s.kind || ""}, el("div", {class: "bar",
          style: "width:" + Math.round(100 * s.entered / top) + "%"}), s.step),
        ...cols.map((k) => el("td", {class: "num", text: fmt(s[k])}))))));
  }));
  $("#journeys-status").textContent = js.length ? "" : "No journeys defined yet.";
  $("#journeys-updated").textContent = "live · updated " + clock();
}

function triggerRow(t) {
  const title = "trigger " + fmt(t.trigger_id) + "; to: " + (t.to_fields.join(", ") || "\u2014")
    + "; traits: " + (t.trait_fields.join(", ") || "\u2014") + "; " + t.topic + "/" + t.partition
    + "@" + t.offset;
  const who = el("button", {class: "link", type: "button", title: "look this profile up",
    onclick: () => { $("#lookup-type").value = "id"; $("#lookup-value").value = t.profile_id;
      syncType(); lookup({type: "id", value: t.profile_id}); }}, t.profile_id);
  return el("tr", {class: "fresh", title: title, "data-trigger": t.trigger_id || ""},
    el("td", {}, when(t.occurred_at)), el("td", {}, el("strong", {text: fmt(t.segment)})),
    el("td", {}, badge(fmt(t.transition))), el("td", {text: fmt(t.channel)}), el("td", {}, who),
    el("td", {class: "mono", text: fmt(t.caused_by)}));
}

async function refreshTriggers() {
  const r = await api("/console/triggers?after=" + tail.last);
  if (r.status !== 200 || !r.body) {
    $("#triggers-status").textContent = (r.body && r.body.message) || ("HTTP " + r.status);
    return;
  }
  const body = $("#triggers-table tbody");
  if (r.body.epoch !== tail.epoch) {  // first poll, or the worker restarted: start again
    const restarted = tail.epoch !== null;
    body.replaceChildren();
    tail = {epoch: r.body.epoch, last: 0};
    if (restarted) return refreshTriggers();
  }
  for (const t of r.body.triggers) {
    body.prepend(triggerRow(t));
    tail.last = Math.max(tail.last, t.seq);
  }
  while (body.children.length > MAX_TRIGGERS) body.lastElementChild.remove();
  const st = r.body.status || {};
  $("#triggers-state").textContent = st.error ? "" : ("live \u00b7 " + (st.topics || []).length
    + " channel topic(s), " + (st.partitions || 0) + " partition(s)");
  $("#triggers-status").textContent = st.error ? st.error
    : body.children.length ? "" : "Waiting for triggers (shown from when this worker started tailing).";
}

function every(ms, fn) {
  const run = async () => {
    if (!needToken) {
      try { await fn(); tokenAccepted(); } catch (e) { if (!(e instanceof Unauthorized)) console.warn(e); }
    }
    setTimeout(run, ms);
  };
  run();
}

function syncType() {
  $("#lookup-other").hidden = $("#lookup-type").value !== "";
}

$("#worker").textContent = location.host;
$("#lookup-type").addEventListener("change", syncType);
$("#lookup-form").addEventListener("submit", (ev) => {
  ev.preventDefault();
  const type = $("#lookup-type").value || $("#lookup-other").value.trim();
  const value = $("#lookup-value").value.trim();
  if (type && value) lookup({type, value});
});
$("#token-form").addEventListener("submit", (ev) => {
  ev.preventDefault();
  token = $("#token-input").value.trim();
  sessionStorage.setItem(TOKEN_KEY, token);
  $("#token-input").value = "";
  $("#token-panel").hidden = true;
  needToken = false;
  tokenAccepted();
  if (lastLookup) lookup(lastLookup);
});
$("#forget-token").addEventListener("click", () => {
  sessionStorage.removeItem(TOKEN_KEY);
  token = "";
  $("#forget-token").hidden = true;
  askToken("");
});
every(5000, refreshSegments);
every(5000, refreshJourneys);
every(2000, refreshTriggers);
