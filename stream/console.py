"""The operator console: one self-contained web page served by every worker.

  GET /console                   the page (inline CSS and JS, no build step, nothing fetched from
                                 elsewhere). It looks profiles up by any identifier or id through
                                 /profiles/..., lists segments with live sizes (GET /segments,
                                 every 5 s), journeys as funnels of their steps with live counts
                                 (GET /journeys, every 5 s) and tails activation triggers (below,
                                 every 2 s).
  GET /console/triggers?after=N  the triggers this worker has seen since it started tailing, newer
                                 than sequence number N: {"epoch", "last", "triggers": [...],
                                 "status"}. `epoch` changes when the worker restarts (sequence
                                 numbers start again).

The tail is a confluent-kafka consumer in a background thread, started by the first request to
/console/triggers. It uses no consumer group (nothing committed, no rebalances with the
workers): it assigns itself every partition of every topic named {TUSK_TOPIC_PREFIX}activations.*
from the end offsets at start, looks for new channels' topics (and partitions) every 10 s and
reads those from their beginning (they were created after it started), and keeps the last 200
triggers in memory. Any worker's tail sees every trigger of the deployment.

Triggers carry delivery addresses and traits; the tail keeps neither: only which fields the
trigger had (`to_fields`, `trait_fields`), so the page shows nothing a profile lookup by an
authorized user would not. Like every route but /health, /metrics and the page itself,
/console/triggers needs the API token when TUSK_API_TOKEN is set (stream/api_auth.py); the page
asks for it, keeps it in the tab's sessionStorage and sends it as `Authorization: Bearer ...`.

Environment: TUSK_API_TOKEN (above); Kafka through the usual settings (KAFKA_BOOTSTRAP_SERVERS or
TUSK_BOOTSTRAP_SERVERS, TUSK_KAFKA_* client options, TUSK_TOPIC_PREFIX; stream/settings.py).
"""

from __future__ import annotations

import atexit
import base64
import hashlib
import threading
import time
import uuid
from collections import deque
from typing import Any

import orjson
from confluent_kafka import OFFSET_BEGINNING, OFFSET_END, Consumer, KafkaException, TopicPartition
from faust.web import Request, Response, View

from stream.app import app, settings
from stream.kafka_io import poll_record, reader, watermarks
from stream.settings import Settings
from stream.web import json_response

KEEP = 200
REFRESH_S = 10.0
TRIGGER_FIELDS = ("trigger_id", "profile_id", "segment", "transition", "channel", "occurred_at",
                  "caused_by")


class TriggerTail:
    """The last `keep` triggers on {prefix}activations.*, read by a group-less consumer thread."""

    def __init__(self, settings: Settings, keep: int = KEEP, refresh_s: float = REFRESH_S) -> None:
        self.settings = settings
        self.prefix = settings.topics.activations("")
        self.keep = keep
        self.refresh_s = refresh_s
        self.epoch = uuid.uuid4().hex[:12]
        self.error: str | None = None
        self._items: deque[dict[str, Any]] = deque(maxlen=keep)
        self._seq = 0
        self._lock = threading.Lock()
        self._assigned: dict[str, set[int]] = {}
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._ready = threading.Event()

    # --- read by the web views (event loop thread) ---

    def start(self) -> None:
        with self._lock:
            if self._thread is not None:
                return
            self._thread = threading.Thread(target=self._run, name="tusk-console-triggers", daemon=True)
            self._thread.start()
        atexit.register(self.stop)

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def wait_ready(self, timeout: float) -> bool:
        return self._ready.wait(timeout)

    @property
    def last(self) -> int:
        return self._seq

    def since(self, after: int) -> list[dict[str, Any]]:
        with self._lock:
            return [t for t in self._items if t["seq"] > after]

    def status(self) -> dict[str, Any]:
        with self._lock:
            topics = {t: len(ps) for t, ps in self._assigned.items() if ps}
        return {"running": self._thread is not None and self._thread.is_alive(),
                "ready": self._ready.is_set(), "topics": sorted(topics),
                "partitions": sum(topics.values()), "keep": self.keep, "error": self.error}

    # --- the consumer thread ---

    def _run(self) -> None:
        consumer = reader(self.settings, f"{self.settings.app_id}-console-unused", **{
            "enable.auto.offset.store": False, "auto.offset.reset": "latest"})
        try:
            first = True
            next_scan = 0.0
            while not self._stop.is_set():
                if time.monotonic() >= next_scan:
                    try:
                        self._scan(consumer, from_end=first)
                        first = False
                        self.error = None
                        self._ready.set()
                    except KafkaException as e:
                        self.error = f"cannot list the activation topics: {e}"
                    next_scan = time.monotonic() + self.refresh_s
                try:
                    msg = poll_record(consumer, 0.5)
                except KafkaException as e:
                    self.error = str(e.args[0])
                    continue
                if msg is not None:
                    self._add(msg)
        except Exception as e:  # keep the reason for /console/triggers; the worker carries on
            self.error = f"the trigger tail stopped: {e!r}"
            raise
        finally:
            consumer.close()

    def _scan(self, consumer: Consumer, from_end: bool) -> None:
        """Assign partitions not assigned yet: at their end on the first scan, else from the start."""
        md = consumer.list_topics(timeout=10)
        new: list[TopicPartition] = []
        for name, tmd in md.topics.items():
            if not name.startswith(self.prefix) or tmd.error is not None:
                continue
            known = self._assigned.get(name, set())
            for p in sorted(tmd.partitions):
                if p in known:
                    continue
                offset = OFFSET_BEGINNING
                if from_end:
                    try:
                        offset = watermarks(consumer, name, p, timeout=5.0)[1]
                    except KafkaException:
                        offset = OFFSET_END
                new.append(TopicPartition(name, p, offset))
        if not new:
            return
        consumer.incremental_assign(new)
        with self._lock:
            for tp in new:
                self._assigned.setdefault(tp.topic, set()).add(tp.partition)

    def _add(self, msg: Any) -> None:
        raw = msg.value()
        if raw is None:
            return
        try:
            trigger = orjson.loads(raw)
        except orjson.JSONDecodeError:
            return
        if not isinstance(trigger, dict):
            return
        topic = msg.topic() or ""
        entry: dict[str, Any] = {k: trigger.get(k) for k in TRIGGER_FIELDS}
        entry["channel"] = entry["channel"] or topic[len(self.prefix):]
        # which address and traits the channel got, never their values
        entry["to_fields"] = sorted(trigger["to"]) if isinstance(trigger.get("to"), dict) else []
        entry["trait_fields"] = sorted(trigger["traits"]) if isinstance(trigger.get("traits"), dict) else []
        entry.update(topic=topic, partition=msg.partition(), offset=msg.offset())
        with self._lock:
            self._seq += 1
            entry["seq"] = self._seq
            self._items.append(entry)


TAIL = TriggerTail(settings)


def _json(view: View, body: Any, status: int = 200) -> Response:
    return json_response(view, body, status, headers={"Cache-Control": "no-store"})


@app.page("/console/triggers")
class ConsoleTriggers(View):
    async def get(self, request: Request) -> Response:
        raw = request.query.get("after", "0")
        try:
            after = int(raw)
        except ValueError:
            return _json(self, {"error": "invalid_parameter",
                                "message": f"after={raw!r}: expected a whole number"}, 400)
        TAIL.start()
        return _json(self, {"epoch": TAIL.epoch, "last": TAIL.last, "triggers": TAIL.since(after),
                            "status": TAIL.status()})


@app.page("/console")
class Console(View):
    async def get(self, request: Request) -> Response:
        return self.html(PAGE, headers=dict(PAGE_HEADERS))


# --- the page ---------------------------------------------------------------------------------

STYLE = """
:root { --ink: #1d2733; --muted: #66717e; --line: #dde3ea; --bg: #f3f5f8; --card: #fff;
        --accent: #0f766e; --accent-soft: #e3f3f1; --warn: #fff7e6; --warn-line: #f0c36d;
        --bad: #b42318; --good: #067647; }
* { box-sizing: border-box; }
body { margin: 0; font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif;
       color: var(--ink); background: var(--bg); }
header { display: flex; align-items: center; gap: 14px; padding: 10px 20px; background: #17212b;
         color: #e8edf2; }
header h1 { font-size: 18px; margin: 0; letter-spacing: .02em; }
header h1 span { color: #7dd3c8; font-weight: 500; }
header .muted { color: #aab6c3; }
.spacer { flex: 1; }
main { display: grid; grid-template-columns: minmax(0, 1.15fr) minmax(0, 1fr); gap: 16px;
       padding: 16px 20px; }
@media (max-width: 980px) { main { grid-template-columns: minmax(0, 1fr); } }
.col { display: flex; flex-direction: column; gap: 16px; min-width: 0; }
.card { background: var(--card); border: 1px solid var(--line); border-radius: 8px; padding: 14px 16px; }
.card.warn { background: var(--warn); border-color: var(--warn-line); margin: 16px 20px 0; }
h2 { font-size: 15px; margin: 0 0 10px; display: flex; align-items: baseline; gap: 8px; flex-wrap: wrap; }
h3 { font-size: 12px; text-transform: uppercase; letter-spacing: .06em; color: var(--muted);
     margin: 16px 0 6px; }
form { display: flex; gap: 8px; flex-wrap: wrap; align-items: center; }
input, select, button { font: inherit; padding: 6px 9px; border: 1px solid #c5ced8; border-radius: 6px;
                        background: #fff; color: var(--ink); }
input { min-width: 0; }
#lookup-value { flex: 1 1 220px; }
button { background: var(--accent); border-color: var(--accent); color: #fff; cursor: pointer; }
button.quiet { background: transparent; color: inherit; border-color: #5b6b7b; }
button.link { background: none; border: 0; padding: 0; color: var(--accent); text-decoration: underline;
              text-align: left;
              font-family: ui-monospace, SFMono-Regular, Menlo, monospace; font-size: 12px; }
table { width: 100%; border-collapse: collapse; }
th, td { text-align: left; padding: 5px 8px; border-bottom: 1px solid var(--line); vertical-align: top;
         overflow-wrap: break-word; }
th { font-size: 12px; color: var(--muted); font-weight: 600; white-space: nowrap; }
td code, td .mono, td.mono, td .chip, td button.link { overflow-wrap: anywhere; }
time { white-space: nowrap; }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; }
#journeys table { margin-bottom: .8rem; }
#journeys .bar { height: 3px; background: #3b82f6; margin-bottom: 2px; }
tr.fresh td { animation: fresh 2.5s ease-out; }
@keyframes fresh { from { background: var(--accent-soft); } to { background: transparent; } }
code, .mono { font-family: ui-monospace, SFMono-Regular, Menlo, monospace; font-size: 12px; }
.muted { color: var(--muted); }
.small { font-size: 12px; font-weight: 400; }
.error { color: var(--bad); }
.badge { display: inline-block; padding: 1px 8px; border-radius: 999px; font-size: 12px; white-space: nowrap;
         background: var(--accent-soft); color: var(--accent); font-weight: 600; }
.badge.exited, .badge.denied, .badge.unsubscribed { background: #fdecea; color: var(--bad); }
.chip { display: inline-block; margin: 2px 6px 2px 0; padding: 1px 8px; border: 1px solid var(--line);
        border-radius: 6px; background: #f8fafc; font-family: ui-monospace, monospace; font-size: 12px; }
.facts { display: grid; grid-template-columns: repeat(auto-fill, minmax(150px, 1fr)); gap: 6px 16px; }
.facts div span { display: block; font-size: 12px; color: var(--muted); }
.scroll { max-height: 420px; overflow: auto; }
"""

BODY = """
<header>
  <h1>Tusk <span>console</span></h1>
  <span id="worker" class="muted small"></span>
  <span class="spacer"></span>
  <span id="auth-state" class="muted small"></span>
  <button id="forget-token" class="quiet" type="button" hidden>Forget token</button>
</header>
<section id="token-panel" class="card warn" hidden>
  <form id="token-form">
    <label for="token-input">This worker's API needs a token (TUSK_API_TOKEN):</label>
    <input id="token-input" type="password" autocomplete="off" placeholder="API token" required>
    <button type="submit">Use token</button>
    <span id="token-error" class="error"></span>
  </form>
  <p class="muted small">Kept in this tab's session storage only, sent as
    <code>Authorization: Bearer &hellip;</code> to this worker.</p>
</section>
<main>
  <div class="col">
    <section class="card">
      <h2>Profile lookup</h2>
      <form id="lookup-form">
        <select id="lookup-type" aria-label="identifier type">
          <option value="email">email</option>
          <option value="user_id">user_id</option>
          <option value="phone">phone</option>
          <option value="anonymous_id">anonymous_id</option>
          <option value="device_id">device_id</option>
          <option value="id">profile id</option>
          <option value="">other type&hellip;</option>
        </select>
        <input id="lookup-other" placeholder="identifier type" aria-label="other identifier type" hidden>
        <input id="lookup-value" placeholder="value, e.g. jo@example.com" aria-label="value" required>
        <button type="submit">Look up</button>
      </form>
      <div id="lookup-status" class="muted small"></div>
    </section>
    <section id="profile" class="card" hidden></section>
  </div>
  <div class="col">
    <section class="card">
      <h2>Segments <span id="segments-updated" class="muted small"></span></h2>
      <div class="scroll">
        <table id="segments-table">
          <thead><tr><th>segment</th><th class="num">size</th><th>destinations</th></tr></thead>
          <tbody></tbody>
        </table>
      </div>
      <div id="segments-status" class="muted small"></div>
    </section>
    <section class="card">
      <h2>Journeys <span id="journeys-updated" class="muted small"></span></h2>
      <div id="journeys" class="scroll"></div>
      <div id="journeys-status" class="muted small"></div>
    </section>
    <section class="card">
      <h2>Activation triggers <span id="triggers-state" class="muted small"></span></h2>
      <div class="scroll">
        <table id="triggers-table">
          <thead><tr><th>occurred</th><th>segment</th><th>transition</th><th>channel</th>
            <th>profile</th><th>caused by</th></tr></thead>
          <tbody></tbody>
        </table>
      </div>
      <div id="triggers-status" class="muted small"></div>
    </section>
  </div>
</main>
"""

SCRIPT = """
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
  if (v === null || v === undefined || v === "") return "\\u2014";
  if (typeof v === "object") return JSON.stringify(v);
  return String(v);
}

function clock() { return new Date().toLocaleTimeString(); }

function when(iso) {  // "2024-05-01 11:00:00" (UTC), the full ISO-8601 time in the tooltip
  if (!iso) return "\u2014";
  const m = /^(\\d{4}-\\d\\d-\\d\\d)T(\\d\\d:\\d\\d:\\d\\d)/.exec(String(iso));
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
  status.textContent = "Looking up\\u2026";
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
    el("td", {text: (s.destinations || []).map((d) => d.channel).join(", ") || "\\u2014"}))));
  $("#segments-status").textContent = segs.length ? "" : "No segments defined yet.";
  $("#segments-updated").textContent = "live \\u00b7 updated " + clock();
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
    const title = el("strong", {text: j.id + " \u00b7 " + fmt(j.active) + " in it"});
    return el("table", {"data-journey": j.id},
      el("thead", {}, el("tr", {}, el("th", {}, title),
        ...cols.map((k) => el("th", {class: "num", text: k})))),
      el("tbody", {}, ...j.steps_live.map((s) => el("tr", {"data-step": s.step},
        el("td", {title: s.kind || ""}, el("div", {class: "bar",
          style: "width:" + Math.round(100 * s.entered / top) + "%"}), s.step),
        ...cols.map((k) => el("td", {class: "num", text: fmt(s[k])}))))));
  }));
  $("#journeys-status").textContent = js.length ? "" : "No journeys defined yet.";
  $("#journeys-updated").textContent = "live \u00b7 updated " + clock();
}

function triggerRow(t) {
  const title = "trigger " + fmt(t.trigger_id) + "; to: " + (t.to_fields.join(", ") || "\\u2014")
    + "; traits: " + (t.trait_fields.join(", ") || "\\u2014") + "; " + t.topic + "/" + t.partition
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
  $("#triggers-state").textContent = st.error ? "" : ("live \\u00b7 " + (st.topics || []).length
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
"""


def _sha256(text: str) -> str:
    return "'sha256-" + base64.b64encode(hashlib.sha256(text.encode()).digest()).decode() + "'"


PAGE = ("<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\n"
        "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n"
        "<title>Tusk console</title><link rel=\"icon\" href=\"data:,\">\n"
        f"<style>{STYLE}</style></head>\n<body>{BODY}<script>{SCRIPT}</script></body></html>\n")

# the page runs only its own inline script and style, talks only to this worker, and is never
# framed or cached
PAGE_HEADERS = {
    "Content-Security-Policy": (f"default-src 'none'; script-src {_sha256(SCRIPT)}; "
                                f"style-src {_sha256(STYLE)}; connect-src 'self'; img-src 'self' data:; "
                                "base-uri 'none'; form-action 'none'; frame-ancestors 'none'"),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}
