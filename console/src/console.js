/* Eventfold operations console: plain JavaScript over /v1/admin (no framework).
 * uPlot (bundled before this file by build.mjs) draws the charts.
 * Every action sends X-Eventfold-Console: 1 and a JSON body: the admin API refuses
 * actions from a browser session without that header (cross-site protection). */
(function () {
  "use strict";

  const API = "/v1/admin";
  const state = { canAct: false, letters: [], selected: new Set(), stream: null, charts: {} };

  // --- small helpers ------------------------------------------------------------------
  function $(id) { return document.getElementById(id); }

  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === false || v === null || v === undefined) continue;
      if (k === "text") node.textContent = v;
      else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
      else node.setAttribute(k, v === true ? "" : v);
    }
    for (const child of children) {
      if (child === null || child === undefined) continue;
      node.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return node;
  }

  function fmt(n) { return n === null || n === undefined ? "–" : Number(n).toLocaleString("en"); }
  function when(ms) { return ms ? new Date(ms).toISOString().replace("T", " ").slice(0, 19) : "–"; }

  function notify(text) {
    const box = $("notice");
    box.textContent = text;
    box.hidden = !text;
  }

  let inFlight = 0; // requests under way, shown as body[data-busy] (tests wait for 0)

  function busy(change) {
    inFlight += change;
    document.body.dataset.busy = String(inFlight);
  }

  async function api(path, options) {
    busy(+1);
    try {
      return await request(path, options);
    } finally {
      busy(-1);
    }
  }

  async function request(path, options) {
    const init = { credentials: "same-origin", headers: { "X-Eventfold-Console": "1" } };
    if (options && options.method) init.method = options.method;
    if (options && options.body !== undefined) {
      init.headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(options.body);
    }
    const response = await fetch(API + path, init);
    if (response.status === 401) {
      window.location.assign("/console/login");
      throw new Error("signed out");
    }
    const body = (response.headers.get("content-type") || "").includes("json") ? await response.json() : null;
    if (!response.ok) {
      const detail = body && body.detail;
      const text = typeof detail === "string" ? detail : JSON.stringify(detail);
      throw new Error(`${response.status}: ${text || response.statusText}`);
    }
    return body;
  }

  function confirmAction(title, text) {
    const dialog = $("confirm");
    $("confirm-title").textContent = title;
    $("confirm-text").textContent = text;
    return new Promise((resolve) => {
      dialog.addEventListener("close", () => resolve(dialog.returnValue === "ok"), { once: true });
      dialog.returnValue = "";
      dialog.showModal();
      $("confirm-cancel").focus();
    });
  }

  async function act(title, text, run) {
    if (!state.canAct || !(await confirmAction(title, text))) return;
    try {
      notify("");
      await run();
    } catch (error) {
      notify(error.message);
    }
  }

  function actionButton(label, aria, onclick) {
    return el("button", { type: "button", "data-action": true, "aria-label": aria,
      disabled: !state.canAct, onclick }, label);
  }

  function applyPermissions() {
    for (const button of document.querySelectorAll("[data-action]")) {
      if (!state.canAct) button.disabled = true;
    }
    $("act-hint").hidden = state.canAct;
    $("dlq-all").disabled = !state.canAct;
  }

  // --- views and navigation --------------------------------------------------------------
  const VIEWS = ["projections", "metrics", "dead-letters", "order"];
  const loaders = {};

  function show() {
    const name = VIEWS.includes(location.hash.slice(1)) ? location.hash.slice(1) : "projections";
    for (const view of VIEWS) {
      $("view-" + view).hidden = view !== name;
      if (view === name) $("tab-" + view).setAttribute("aria-current", "page");
      else $("tab-" + view).removeAttribute("aria-current");
    }
    loaders[name]().catch((error) => notify(error.message));
  }

  // --- projections --------------------------------------------------------------------------
  loaders.projections = async function () {
    const data = await api("/projections");
    const body = $("projections-table").tBodies[0];
    body.replaceChildren(...data.projections.map((p) => el("tr", { "data-projection": p.name },
      el("th", { scope: "row" }, p.name),
      el("td", {}, p.kind),
      el("td", {}, p.enabled ? "yes" : "no"),
      el("td", { class: "version", "data-active": p.name }, p.active),
      el("td", { "data-building": p.name }, building(p)),
      el("td", { class: "num" }, fmt(p.lag)),
      el("td", {}, actionButton("Rebuild", `Rebuild ${p.name}`, () => rebuild([p.name]))),
    )));
    $("retired-table").tBodies[0].replaceChildren(...(data.retired.length ? data.retired.map((r) =>
      el("tr", { "data-version": r.version },
        el("th", { scope: "row" }, r.version),
        el("td", {}, r.projections.join(", ")),
        el("td", {}, r.drop_after ? when(r.drop_after * 1000) : "–"),
        el("td", {}, actionButton("Drop now", `Drop version ${r.version}`, () => drop(r.version))),
      )) : [el("tr", {}, el("td", { colspan: 4 }, "none"))]));
    if (data.rebuild) showRebuild(data.rebuild);
    if (data.rebuild && data.rebuild.state === "running") follow();
    applyPermissions();
    // a rebuild started anywhere (eventfold replay, another console) saves its progress
    // once a second: the table follows it while the view is shown
    clearTimeout(buildingTimer);
    if (data.projections.some((p) => p.building)) {
      buildingTimer = setTimeout(() => {
        if (!$("view-projections").hidden) loaders.projections().catch((e) => notify(e.message));
      }, 2000);
    }
  };

  let buildingTimer;

  function building(p) {
    if (!p.building) return "–";
    const s = p.building_progress;
    if (!s) return p.building;
    const share = s.total ? Math.floor((100 * s.records) / s.total) : 100;
    const eta = s.eta_s == null ? "" : `, ETA ${Math.round(s.eta_s)} s`;
    return `${p.building}: ${fmt(s.records)} of ${fmt(s.total)} records (${share} %), ` +
      `${fmt(Math.round(s.events_per_s))}/s${eta}`;
  }

  function rebuild(names) {
    const what = names.length ? names.join(", ") : "every projection";
    act("Start a rebuild", `Rebuild ${what} from the topics into a new version, and switch to it at the end?`,
      async () => {
        showRebuild(await api("/rebuilds", { method: "POST", body: { projections: names } }));
        follow();
      });
  }

  function drop(version) {
    act("Drop a retired version", `Drop ${version} now? Readers still on it lose it.`, async () => {
      await api("/versions/" + encodeURIComponent(version), { method: "DELETE" });
      await loaders.projections();
    });
  }

  function abortRebuild() {
    act("Abort the rebuild", "Abort the rebuild in progress? Its partial version is dropped; nothing switches.",
      async () => {
        await api("/rebuilds/current", { method: "DELETE" });
        await loaders.projections();
      });
  }

  function showRebuild(p) {
    const done = p.state !== "running";
    const states = { running: "running", switched: "switched: the new version is active",
      failed: "failed", aborted: "aborted" };
    $("rebuild-state").textContent =
      `Rebuild of ${p.projections.join(", ")} ${states[p.state] || p.state}` +
      (p.message ? ` (${p.message})` : "") + `, started by ${p.started_by}.`;
    const box = $("rebuild");
    box.dataset.state = p.state;
    // the states this page saw, in order: the live stream's updates, for tests and people
    const seen = (box.dataset.seen || "").split(" ").filter(Boolean);
    if (box.dataset.rebuild !== p.id) seen.length = 0;
    box.dataset.rebuild = p.id;
    if (seen[seen.length - 1] !== p.state) seen.push(p.state);
    box.dataset.seen = seen.join(" ");
    const bar = $("rebuild-bar");
    bar.hidden = false;
    bar.max = Math.max(p.total, 1);
    bar.value = p.state === "switched" ? bar.max : p.records;
    $("rebuild-records").textContent = `${fmt(p.records)} of ${fmt(p.total)}`;
    $("rebuild-rate").textContent = fmt(p.events_per_s);
    $("rebuild-eta").textContent = done ? "–" : p.eta_s === null ? "…" : `${p.eta_s} s`;
    $("rebuild-steps").replaceChildren(...p.steps.map((s) => el("li", {},
      `${s.projections.join(", ")}: ${s.state}` + (s.version ? ` → ${s.version}` : "") +
      (s.total ? ` (${fmt(s.records)} of ${fmt(s.total)} records)` : ""))));
  }

  function follow() {
    if (state.stream) return;
    const stream = new EventSource(API + "/rebuilds/events");
    state.stream = stream;
    stream.addEventListener("progress", (message) => {
      const progress = JSON.parse(message.data);
      if (progress) showRebuild(progress);
      if (!progress || progress.state !== "running") {
        stream.close();
        state.stream = null;
        if (!$("view-projections").hidden) loaders.projections().catch((e) => notify(e.message));
      }
    });
    stream.addEventListener("error", () => {
      stream.close();
      state.stream = null;
    });
  }

  // --- charts -------------------------------------------------------------------------
  function palette(i, n) { return `hsl(${Math.round((360 * i) / Math.max(n, 1))} 70% 45%)`; }

  const WINDOW_S = 300; // the time axis spans at least the last five minutes

  function chart(id, labels, columns, unit) {
    const host = $(id);
    const width = Math.max(320, host.clientWidth || 600);
    const series = [{}].concat(labels.map((label, i) => ({
      label, stroke: palette(i, labels.length), width: 1.5, spanGaps: true,
      points: { show: columns[0].length < 3 },
    })));
    const range = (u, min, max) => {
      const now = Date.now() / 1000;
      return [Math.min(min ?? now, now - WINDOW_S), Math.max(max ?? now, now)];
    };
    const options = { width, height: 220, series, legend: { live: false },
      axes: [{ stroke: "#94a3b8", grid: { stroke: "#334155" } },
        { label: unit, size: 60, stroke: "#94a3b8", grid: { stroke: "#334155" } }],
      scales: { x: { time: true, range }, y: { range: (u, min, max) => [0, Math.max(max || 0, 1)] } } };
    const drawn = state.charts[id];
    if (drawn && drawn.series.length === series.length &&
        drawn.series.every((s, i) => i === 0 || s.label === series[i].label)) {
      drawn.setData(columns); // the same series: new points, no redraw of the whole chart
      return;
    }
    if (drawn) drawn.destroy();
    host.replaceChildren();
    state.charts[id] = new uPlot(options, columns, host);
  }

  function latest(values) {
    for (let i = values.length - 1; i >= 0; i--) if (values[i] !== null) return values[i];
    return null;
  }

  loaders.metrics = async function () {
    const data = await api("/metrics");
    const samples = data.samples;
    const xs = samples.map((s) => s.at);
    const keys = [...new Set(samples.flatMap((s) => Object.keys(s.lag)))].sort();
    const lag = keys.map((k) => samples.map((s) => (k in s.lag ? s.lag[k] : null)));
    chart("chart-lag", keys, [xs, ...lag], "records");
    const total = samples.length ? Object.values(samples[samples.length - 1].lag).reduce((a, b) => a + b, 0) : 0;
    const worst = keys.map((k, i) => [k, latest(lag[i]) || 0]).sort((a, b) => b[1] - a[1])[0];
    $("sum-lag").textContent = `${samples.length} samples over ${keys.length} partitions; lag now ${fmt(total)} records` +
      (worst && worst[1] ? `, most on ${worst[0]} (${fmt(worst[1])})` : "") + ".";
    const rin = samples.map((s) => s.events_in);
    const rout = samples.map((s) => s.events_out);
    chart("chart-rate", ["in", "out"], [xs, rin, rout], "events/s");
    $("sum-rate").textContent = `Now ${fmt(latest(rin))} events/s in, ${fmt(latest(rout))} out.`;
    const fresh = samples.map((s) => s.freshness_s);
    chart("chart-fresh", ["freshness"], [xs, fresh], "seconds");
    $("sum-fresh").textContent = `Now ${fmt(latest(fresh))} s.`;
    const p50 = samples.map((s) => s.latency_p50_ms);
    const p99 = samples.map((s) => s.latency_p99_ms);
    chart("chart-latency", ["p50", "p99"], [xs, p50, p99], "ms");
    $("sum-latency").textContent = `Now p50 ${fmt(latest(p50))} ms, p99 ${fmt(latest(p99))} ms.`;
    for (const id of ["lag", "rate", "fresh", "latency"]) {
      $("chart-" + id).setAttribute("aria-label", $("cap-" + id).textContent + ". " + $("sum-" + id).textContent);
    }
  };

  // --- dead letters -----------------------------------------------------------------------
  loaders["dead-letters"] = async function () {
    const query = new URLSearchParams({ state: $("dlq-state").value });
    if ($("dlq-topic").value) query.set("topic", $("dlq-topic").value);
    const projection = $("dlq-projection").value.trim();
    if (projection) query.set("projection", projection);
    const table = $("dlq-table");
    table.setAttribute("aria-busy", "true");
    try {
      const data = await api("/dead-letters?" + query);
      state.letters = data.items;
      // a selection survives a refresh, less what left the list or was re-driven
      const open = new Set(data.items.filter((v) => !v.redriven).map((v) => v.ref));
      state.selected = new Set([...state.selected].filter((ref) => open.has(ref)));
      renderLetters();
    } finally {
      table.removeAttribute("aria-busy");
    }
  };

  function renderLetters() {
    const needle = $("dlq-search").value.trim().toLowerCase();
    const shown = state.letters.filter((v) => !needle ||
      [v.key, v.event_id, v.error, v.event_type, v.ref].some((x) => x && x.toLowerCase().includes(needle)));
    $("dlq-table").tBodies[0].replaceChildren(...(shown.length ? shown.map((v) => el("tr", { "data-ref": v.ref, "data-key": v.key },
      el("td", {}, el("input", { type: "checkbox", "aria-label": `Select ${v.ref}`, checked: state.selected.has(v.ref),
        disabled: v.redriven || !state.canAct,
        onchange: (e) => { if (e.target.checked) state.selected.add(v.ref); else state.selected.delete(v.ref); selectionChanged(); } })),
      el("th", { scope: "row" }, el("button", { type: "button", class: "link", "aria-label": `Show ${v.ref}`,
        onclick: () => detail(v) }, v.ref)),
      el("td", {}, when(v.timestamp_ms)),
      el("td", {}, `${v.original_topic || "?"}:${v.original_partition ?? "?"}@${v.original_offset ?? "?"}`),
      el("td", {}, v.reason || "–"),
      el("td", {}, v.projection || "join"),
      el("td", {}, [v.event_type, v.event_id].filter(Boolean).join(" ") || "–"),
      el("td", {}, v.key ?? "–"),
      el("td", {}, v.redriven ? "re-driven" : actionButton("Re-drive", `Re-drive ${v.ref}`, () => redrive([v.ref]))),
    )) : [el("tr", {}, el("td", { colspan: 9 }, "No dead letters match."))]));
    $("dlq-count").textContent = `${shown.length} shown`;
    selectionChanged();
  }

  function selectionChanged() {
    $("redrive-selected").disabled = !state.canAct || state.selected.size === 0;
    $("redrive-selected").textContent = `Re-drive selected (${state.selected.size})`;
  }

  function redrive(refs) {
    act("Re-drive dead letters",
      `Publish ${refs.length} dead letter(s) back to their original topic for the processors to take again: ${refs.join(", ")}?`,
      async () => {
        const result = await api("/dead-letters/redrive", { method: "POST", body: { letters: refs } });
        notify(result.error ? `Kafka failed: ${result.error}` : "");
        await loaders["dead-letters"]();
      });
  }

  function detail(v) {
    const facts = [["Dead letter", v.ref], ["Dead-lettered", when(v.timestamp_ms)],
      ["From", `${v.original_topic || "?"} partition ${v.original_partition ?? "?"} offset ${v.original_offset ?? "?"}`],
      ["Reason", v.reason], ["Error type", v.error_type], ["Failed in", v.projection || "join"],
      ["Event", `${v.event_type || "?"} ${v.event_id || ""}`], ["Key", v.key], ["Correlation id", v.correlation_id],
      ["Decodable", v.decodable ? "yes" : "no"], ["Re-driven", v.redriven ? "yes" : "no"]];
    $("dlq-detail-title").textContent = `Dead letter ${v.ref}`;
    $("dlq-detail-facts").replaceChildren(...facts.flatMap(([k, x]) => [el("dt", {}, k), el("dd", {}, x ?? "–")]));
    $("dlq-detail-error").textContent = v.error || v.decode_error || "–";
    $("dlq-detail-content").textContent = v.envelope ? JSON.stringify(v.envelope, null, 2)
      : `${v.value_bytes} bytes, not decodable: ${v.preview_hex || ""}`;
    $("dlq-detail-history").replaceChildren(el("li", {}, "loading…"));
    $("dlq-detail").hidden = false;
    $("dlq-detail").focus();
    const [topic, partition, offset] = v.ref.split(":");
    api(`/dead-letters/${encodeURIComponent(topic)}/${partition}/${offset}`).then((full) => {
      $("dlq-detail-history").replaceChildren(...full.history.map((h) =>
        el("li", {}, `${when(h.timestamp_ms)} ${h.ref}: ${h.what}`)));
    }).catch((error) => notify(error.message));
  }

  // --- an order ------------------------------------------------------------------------------
  loaders.order = async function () {
    const wanted = new URLSearchParams(location.search).get("order");
    if (wanted && !$("order-id").value) {
      $("order-id").value = wanted;
      await lookUp(wanted);
    }
  };

  async function lookUp(orderId) {
    $("order-result").hidden = true;
    const order = await api("/orders/" + encodeURIComponent(orderId));
    const doc = order.document;
    $("order-summary").textContent =
      `${order.order_id}: ${doc.status}, total ${doc.total} ${doc.currency || ""}, paid ${doc.amount_paid} (read model ${order.version})`;
    $("timeline-table").tBodies[0].replaceChildren(...order.timeline.map((t, i) => el("tr", {},
      el("td", { class: "num" }, i + 1), el("td", {}, t.type), el("td", {}, t.event_id), el("td", {}, t.occurred_at))));
    $("events-table").tBodies[0].replaceChildren(...order.events.map((e) => el("tr", {},
      el("td", {}, e.topic), el("td", { class: "num" }, e.partition), el("td", { class: "num" }, e.offset ?? "?"),
      el("td", {}, e.type || "?"), el("td", {}, e.event_id || "?"), el("td", {}, when(e.timestamp_ms)),
      el("td", {}, (e.headers && e.headers["correlation-id"]) || e.note || "–"))));
    $("order-document").textContent = JSON.stringify(doc, null, 2);
    $("order-result").hidden = false;
  }

  // --- start --------------------------------------------------------------------------------
  async function start() {
    const session = await api("/session");
    state.canAct = session.can_act;
    $("who").textContent = session.auth_disabled ? "API keys off (local use)"
      : `Key ${session.key} (${session.scopes.join(", ")})`;
    $("sign-out").hidden = session.auth_disabled;
    applyPermissions();
    $("rebuild-all").addEventListener("click", () => rebuild([]));
    $("abort-rebuild").addEventListener("click", abortRebuild);
    $("redrive-selected").addEventListener("click", () => redrive([...state.selected]));
    $("dlq-all").addEventListener("change", (e) => {
      state.selected = new Set(e.target.checked ? state.letters.filter((v) => !v.redriven).map((v) => v.ref) : []);
      renderLetters();
    });
    $("dlq-filters").addEventListener("submit", (e) => { e.preventDefault(); loaders["dead-letters"]().catch((x) => notify(x.message)); });
    $("dlq-search").addEventListener("input", renderLetters);
    $("order-form").addEventListener("submit", (e) => {
      e.preventDefault();
      lookUp($("order-id").value.trim()).catch((error) => notify(error.message));
    });
    $("sign-out").addEventListener("click", async () => {
      await fetch("/console/logout", { method: "POST", credentials: "same-origin" });
      window.location.assign("/console/login");
    });
    window.addEventListener("hashchange", show);
    setInterval(() => { if (!$("view-metrics").hidden) loaders.metrics().catch((e) => notify(e.message)); }, 5000);
    document.body.dataset.ready = "true";
    show();
  }

  document.addEventListener("DOMContentLoaded", () => start().catch((error) => notify(error.message)));
})();
