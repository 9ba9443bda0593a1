// The proxycast dashboard: reads /ui/api/ with the pasted key (sessionStorage, Authorization header).
// Every value from the server goes into the page as text (textContent), never as HTML.
(function () {
  "use strict";
  const STORAGE = "proxycast.key";
  const PAGES = ["overview", "providers", "live", "sessions", "requests", "config", "keys", "export"];
  const ADMIN = new Set(["providers", "config", "keys"]);
  // Seconds between overview reloads: a long range's buckets are hours or days wide.
  const POLL = {"1h": 5, "24h": 10, "7d": 30, "30d": 60};
  const $ = (selector) => document.querySelector(selector);
  const number = new Intl.NumberFormat(undefined, {maximumFractionDigits: 0});
  const compact = new Intl.NumberFormat(undefined, {notation: "compact", maximumFractionDigits: 1});
  const usd = new Intl.NumberFormat(undefined, {maximumFractionDigits: 4});

  let key = sessionStorage.getItem(STORAGE) || "";
  let me = null;
  let current = null;
  let timer = null;
  const overview = {range: "24h", by: "model", asked: 0};
  const exported = {asked: 0};
  const live = {controller: null, paused: false, missed: 0, dropped: 0};

  class ApiError extends Error {
    constructor(status, message) { super(message); this.status = status; }
  }

  async function api(path, signal, method) {
    const response = await fetch("/ui/api/" + path, {
      method: method || "GET",
      headers: {Authorization: "Bearer " + key}, cache: "no-store", credentials: "omit", signal,
    });
    if (!response.ok) {
      let message = `HTTP ${response.status}`;
      try { message = (await response.json()).error.message || message; } catch (e) { /* not JSON */ }
      throw new ApiError(response.status, message);
    }
    return response;
  }
  const getJSON = async (path) => (await api(path)).json();

  // The answer to a question, or STALE once a newer question was asked (its failure too: an error
  // about an old question must not show under a newer answer).
  const STALE = Symbol("stale");
  async function latest(answer, current) {
    try {
      const value = await answer;
      return current() ? value : STALE;
    } catch (error) {
      if (current()) throw error;
      return STALE;
    }
  }

  function node(tag, text, attributes) {
    const element = document.createElement(tag);
    if (text !== undefined && text !== null) element.textContent = String(text);
    for (const [name, value] of Object.entries(attributes || {})) element.setAttribute(name, value);
    return element;
  }

  function clock(seconds) {
    return new Date(seconds * 1000).toLocaleTimeString([], {hour: "2-digit", minute: "2-digit", second: "2-digit"});
  }

  // A bucket's label. Buckets are aligned in UTC: the 7 d and 30 d ranges' (6 h, 1 day) are labelled
  // in UTC, or a day bucket would carry the previous day's date west of Greenwich.
  function when(seconds, span) {
    const date = new Date(seconds * 1000);
    if (span <= 3600) return date.toLocaleTimeString([], {hour: "2-digit", minute: "2-digit"});
    if (span <= 86400) {
      return date.toLocaleString([], {weekday: "short", hour: "2-digit", minute: "2-digit"});
    }
    if (span <= 7 * 86400) {
      return date.toLocaleString([], {month: "short", day: "numeric", hour: "2-digit", minute: "2-digit",
                                      hourCycle: "h23", timeZone: "UTC"}) + " UTC";
    }
    return date.toLocaleDateString([], {month: "short", day: "numeric", timeZone: "UTC"}) + " UTC";
  }

  // Sign-in and navigation

  async function signIn(candidate) {
    key = candidate;
    me = await getJSON("me");
    sessionStorage.setItem(STORAGE, key);
    $("#signin").hidden = true;
    $("#nav").hidden = false;
    $("#who").hidden = false;
    $("#client-name").textContent = me.admin ? "signed in: gateway key" : `signed in: ${me.client}`;
    for (const link of document.querySelectorAll("nav a[data-admin]")) link.hidden = !me.admin;
    route();
  }

  function signOut() {
    stop();
    key = "";
    me = null;
    sessionStorage.removeItem(STORAGE);
    for (const section of document.querySelectorAll(".page")) section.hidden = true;
    $("#nav").hidden = true;
    $("#who").hidden = true;
    $("#signin").hidden = false;
    $("#key").value = "";
    history.replaceState(null, "", "#");
  }

  function stop() {
    if (timer !== null) { clearInterval(timer); timer = null; }
    if (live.controller) { live.controller.abort(); live.controller = null; }
  }

  function route() {
    if (!me) return;
    let page = location.hash.slice(1);
    if (!PAGES.includes(page) || (ADMIN.has(page) && !me.admin)) page = "overview";
    stop();
    current = page;
    for (const name of PAGES) $("#page-" + name).hidden = name !== page;
    for (const link of document.querySelectorAll("nav a")) {
      link.classList.toggle("active", link.dataset.page === page);
    }
    const show = {overview: showOverview, providers: showProviders, live: showLive,
                  sessions: showSessions, requests: showRequests, config: showConfig,
                  keys: showKeys, export: showExport}[page];
    show();
  }

  function every(seconds, load) {
    load();
    timer = setInterval(() => { if (!document.hidden) load(); }, seconds * 1000);
  }

  // An error shows on the page that asked (each page has its own #PAGE-error), until its next answer.
  function failed(error) {
    if (error instanceof ApiError && error.status === 401) { signOut(); return; }
    const box = $(`#${current}-error`);
    if (!box) return;
    box.textContent = String(error.message || error);
    box.hidden = false;
  }

  function answered(page) {
    const box = $(`#${page}-error`);
    box.hidden = true;
    box.textContent = "";
  }

  // Overview

  function showOverview() {
    for (const button of document.querySelectorAll("#range button")) {
      button.classList.toggle("on", button.dataset.range === overview.range);
    }
    $("#by").value = overview.by;
    every(POLL[overview.range], () => loadOverview().catch(failed));
  }

  async function loadOverview() {
    // a slow answer (30 d, say) must not overwrite the one for a range chosen after it
    const asked = ++overview.asked;
    const data = await latest(getJSON(`overview?range=${overview.range}&by=${overview.by}`),
                              () => asked === overview.asked);
    if (data === STALE) return;
    answered("overview");
    const values = new Map();
    for (const point of data.points) values.set(point.bucket + "\u0000" + point.group, point);
    const metrics = {
      requests: [(p) => p.requests, (v) => compact.format(v)],
      tokens: [(p) => p.input_tokens + p.output_tokens, (v) => compact.format(v)],
      cost: [(p) => p.cost_usd, (v) => "$" + usd.format(v)],
      errors: [(p) => p.errors, (v) => compact.format(v)],
    };
    const label = (g) => g || "(none)";
    const span = data.buckets * data.bucket_seconds;
    for (const [name, [pick, format]] of Object.entries(metrics)) {
      window.ProxycastCharts.stacked($("#chart-" + name), {
        buckets: data.buckets, start: data.start, bucketSeconds: data.bucket_seconds,
        groups: data.groups, format, label, time: (s) => when(s, span),
        values: (bucket, group) => {
          const point = values.get(bucket + "\u0000" + group);
          return point ? pick(point) : 0;
        },
      });
    }
    $("#total-requests").textContent = number.format(data.totals.requests);
    $("#total-tokens").textContent = number.format(data.totals.input_tokens + data.totals.output_tokens);
    $("#total-cost").textContent = "$" + usd.format(data.totals.cost_usd);
    $("#total-errors").textContent = number.format(data.totals.errors);
    $("#totals").dataset.range = data.range;
    const legend = $("#legend");
    legend.replaceChildren(...data.groups.map((group) => {
      const item = node("li", null, {"data-group": group});
      item.append(window.ProxycastCharts.swatch(group), node("span", label(group), {title: label(group)}));
      return item;
    }));
    let note = me.admin ? "" : `Only the requests of ${me.client}. `;
    if (!data.ledger) note += "The ledger is off ([ledger] url = \"off\"): nothing is recorded.";
    $("#overview-note").textContent = note;
  }

  // Providers

  function showProviders() {
    every(2, () => loadProviders().catch(failed));
  }

  async function loadProviders() {
    const data = await getJSON("providers");
    answered("providers");
    const body = $("#providers-body");
    const blocks = [];
    for (const provider of data.providers) {
      blocks.push(node("h3", `${provider.provider} (${provider.type})`));
      const wrap = node("div", null, {class: "table-wrap"});
      const table = node("table", null, {"data-provider": provider.provider});
      const head = node("tr");
      const titles = ["Key", "State", "Until", "Why", "Last error", "Attempts", "Success",
        "Requests left", "Tokens left"];
      for (const title of titles) {
        head.append(node("th", title));
      }
      table.append(node("thead"), node("tbody"));
      table.tHead.append(head);
      for (const key of provider.keys) {
        const row = node("tr", null, {"data-key": key.key});
        const until = key.until === null ? "" : `${clock(key.until)} (in ${Math.ceil(key.seconds)} s)`;
        const last = key.last_error === null ? "" : `${key.last_error} at ${clock(key.last_error_at)}`;
        const rate = key.success_rate === null ? "" : `${(key.success_rate * 100).toFixed(1)} %`;
        row.append(
          node("td", key.key),
          node("td", key.state, {class: `state state-${key.state}`}),
          node("td", until), node("td", key.reason), node("td", last, {class: "last-error"}),
          node("td", number.format(key.attempts), {class: "attempts"}), node("td", rate),
          node("td", quota(key.remaining.requests), {class: "quota-requests"}),
          node("td", quota(key.remaining.tokens), {class: "quota-tokens"}),
        );
        table.tBodies[0].append(row);
      }
      wrap.append(table);
      blocks.push(wrap);
    }
    body.replaceChildren(...blocks);
  }

  // What the upstream's rate-limit headers last said is left of a key's limit: "419 / 500 (resets
  // 12:00:30)"; empty when the upstream never said.
  function quota(left) {
    if (!left) return "";
    let text = number.format(left.remaining);
    if (left.limit !== null) text += ` / ${number.format(left.limit)}`;
    if (left.reset_at !== null) text += ` (resets ${clock(left.reset_at)})`;
    return text;
  }

  // Live traffic

  function showLive() {
    live.paused = false;
    live.missed = 0;
    $("#live-pause").textContent = "Pause";
    $("#live-missed").textContent = "";
    connect();
  }

  async function connect() {
    const controller = new AbortController();
    live.controller = controller;
    $("#live-status").textContent = "connecting";
    try {
      const response = await api("live", controller.signal);
      const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
      let buffer = "";
      for (;;) {
        const {value, done} = await reader.read();
        if (done) break;
        buffer += value.replace(/\r\n?/g, "\n");
        let end;
        while ((end = buffer.indexOf("\n\n")) >= 0) {
          frame(buffer.slice(0, end));
          buffer = buffer.slice(end + 2);
        }
      }
    } catch (error) {
      if (controller.signal.aborted) return;
      if (error instanceof ApiError && error.status === 401) { signOut(); return; }
    }
    if (live.controller !== controller) return;
    $("#live-status").textContent = "disconnected: reconnecting";
    setTimeout(() => { if (live.controller === controller) connect(); }, 2000);
  }

  function frame(block) {
    let event = "message", data = "";
    for (const line of block.split("\n")) {
      if (line.startsWith("event:")) event = line.slice(6).trim();
      else if (line.startsWith("data:")) data += line.slice(5).trim();
    }
    if (event === "hello") {
      $("#live-status").textContent = `live (worker ${JSON.parse(data).worker})`;
      $("#live-status").dataset.state = "live";
    } else if (event === "dropped") {
      live.dropped = JSON.parse(data).dropped;
      showMissed();
    } else if (event === "request") {
      if (live.paused) { live.missed += 1; showMissed(); return; }
      addRow(JSON.parse(data));
    }
  }

  function showMissed() {
    const parts = [];
    if (live.missed) parts.push(`${live.missed} not shown while paused`);
    if (live.dropped) parts.push(`${live.dropped} lost (this page fell behind)`);
    $("#live-missed").textContent = parts.join("; ");
  }

  function addRow(event) {
    const row = node("tr", null, {"data-request-id": event.request_id, "data-received": String(Date.now())});
    row.append(
      node("td", clock(event.time)), node("td", event.client), node("td", event.model || "-"),
      node("td", event.key || event.provider || "-"),
      node("td", event.status, {class: event.status >= 400 ? "status-error" : ""}),
      node("td", `${number.format(event.tokens.input)} / ${number.format(event.tokens.output)}`),
      node("td", `${event.duration.toFixed(3)} s`),
      node("td", event.attempts.join(", ") || "-"),
    );
    const body = $("#live-table tbody");
    body.prepend(row);
    while (body.rows.length > 200) body.deleteRow(-1);
  }

  // Configuration

  function table(headers, rows) {
    const wrap = node("div", null, {class: "table-wrap"});
    const element = node("table");
    const head = node("tr");
    for (const title of headers) head.append(node("th", title));
    element.append(node("thead"), node("tbody"));
    element.tHead.append(head);
    for (const cells of rows) {
      const row = node("tr");
      for (const cell of cells) row.append(node("td", cell === null || cell === undefined ? "" : cell));
      element.tBodies[0].append(row);
    }
    wrap.append(element);
    return wrap;
  }

  function showConfig() {
    loadConfig().catch(failed);
  }

  async function loadConfig() {
    const c = await getJSON("config");
    answered("config");
    const list = (items) => items.join(", ");
    const parts = [
      node("p", `Source: ${c.source}`, {class: "note"}),
      node("h3", "Providers (the routing table)"),
      table(["Name", "Type", "Base URL", "Models", "Keys"],
            c.providers.map((p) => [p.name, p.type, p.base_url, list(p.models) || "(only as a prefix)", list(p.keys) || "none"])),
      node("h3", "Aliases"),
      table(["Name", "Target"], Object.entries(c.aliases)),
      node("h3", "Fallbacks"),
      table(["Model", "Targets, in order"], Object.entries(c.fallbacks).map(([m, t]) => [m, list(t)])),
      node("h3", "Routing"),
      table(["Retries", "Retry on", "Cooldown", "Max cooldown", "Hedge after"],
            [[c.routing.retries, list(c.routing.retry_on), `${c.routing.cooldown} s`, `${c.routing.max_cooldown} s`, c.routing.hedge_after ? `${c.routing.hedge_after} s` : "off"]]),
      node("h3", "Clients and limits"),
      table(["Name", "Models", "rpm", "tpm", "USD / day", "USD / month"],
            [["(server.api_keys: " + c.server.api_keys + ")", "all", "", "", "", ""],
             ...c.clients.map((k) => [k.name, list(k.models) || "all", k.rpm, k.tpm, k.max_usd_per_day, k.max_usd_per_month])]),
      node("h3", "Prices (USD per million tokens)"),
      table(["Model", "Input", "Output", "Cache read", "Cache write"],
            Object.entries(c.prices).map(([m, p]) => [m, p.input, p.output, p.cache_read, p.cache_write])),
      node("h3", "Server and ledger"),
      table(["Listen", "Workers", "Access log", "CORS origins", "Ledger", "Retention"],
            [[`${c.server.host}:${c.server.port}`, c.server.workers, c.server.access_log, list(c.server.cors_origins) || "none", c.ledger.url, `${c.ledger.retention_days} d`]]),
    ];
    $("#config-body").replaceChildren(...parts);
  }

  // Keys (made at run time): their settings, never the key; a revoke button each

  function showKeys() {
    every(5, () => loadKeys().catch(failed));
  }

  function moment(seconds) {
    return seconds === null || seconds === undefined ? "never" : new Date(seconds * 1000).toLocaleString();
  }

  async function loadKeys() {
    const answer = await getJSON("keys");
    answered("keys");
    const rows = answer.keys.map((k) => [k.name, k.models.join(", ") || "all", k.rpm, k.tpm,
                                         k.max_usd_per_day, k.max_usd_per_month, moment(k.created), moment(k.expires), ""]);
    const view = table(["Name", "Models", "rpm", "tpm", "USD / day", "USD / month", "Created", "Expires", ""], rows);
    const body = view.querySelector("tbody");
    answer.keys.forEach((k, i) => {
      const row = body.rows[i];
      row.dataset.key = k.name;
      const button = node("button", "Revoke", {type: "button", "data-revoke": k.name});
      button.addEventListener("click", () => revokeKey(k.name).catch(failed));
      row.cells[row.cells.length - 1].append(button);
    });
    const parts = answer.keys.length ? [view] : [node("p", "No runtime keys: proxycast keys create --name NAME makes one.", {class: "note"})];
    $("#keys-body").replaceChildren(...parts);
  }

  async function revokeKey(name) {
    if (!window.confirm(`Revoke the key ${name}? Its clients are refused at once.`)) return;
    await api("keys/" + encodeURIComponent(name), undefined, "DELETE");
    await loadKeys();
  }

  // Sessions

  function showSessions() {
    every(10, () => loadSessions().catch(failed));
  }

  async function loadSessions() {
    const since = $("#sessions-since").value;
    const rows = await getJSON(`usage?since=${since}&by=session`);
    if (since !== $("#sessions-since").value) return;  // another range was chosen meanwhile
    answered("sessions");
    const sessions = rows.filter((r) => r.session);
    const fresh = table(["Session", "Requests", "Errors", "Input tokens", "Output tokens", "Cost (USD)"],
                        sessions.map((r) => [r.session, number.format(r.requests), number.format(r.errors),
                                             number.format(r.input_tokens), number.format(r.output_tokens),
                                             r.cost_usd.toFixed(4)])).firstChild;
    fresh.id = "sessions-table";
    $("#sessions-table").replaceWith(fresh);
  }

  // Requests (the request inspector: [capture])

  const inspected = {asked: 0};

  function showRequests() {
    loadRequests().catch(failed);
  }

  async function loadRequests() {
    const since = $("#requests-since").value;
    const answer = await getJSON(`requests?since=${since}`);
    if (since !== $("#requests-since").value) return;
    answered("requests");
    if (!answer.capture) {
      $("#requests-note").textContent = "Request capture is off on this gateway ([capture] enabled = false): " +
        "only requests captured before are listed.";
    }
    const body = node("tbody");
    for (const r of answer.requests) {
      const row = node("tr", null, {"data-request-id": r.request_id, class: "pick", tabindex: "0"});
      const status = node("td", r.status);
      if (r.status >= 400) status.className = "status-error";
      row.append(node("td", new Date(r.time * 1000).toLocaleString()), node("td", r.request_id),
                 node("td", r.client), node("td", r.model), status);
      row.addEventListener("click", () => inspect(r.request_id).catch(failed));
      row.addEventListener("keydown", (e) => { if (e.key === "Enter") inspect(r.request_id).catch(failed); });
      body.append(row);
    }
    $("#requests-table").tBodies[0].replaceWith(body);
  }

  // A body's text, pretty-printed when it is JSON.
  function pretty(text) {
    try { return JSON.stringify(JSON.parse(text), null, 2); } catch (e) { return text; }
  }

  const asText = (value) => typeof value === "string" ? value : JSON.stringify(value);

  // What one content part says, whatever the API (OpenAI, Anthropic, Gemini, Responses).
  function partText(part) {
    if (typeof part === "string") return part;
    if (!part || typeof part !== "object") return asText(part);
    if (typeof part.text === "string") return part.text;
    if (part.type === "tool_use") return `tool call ${part.name}(${JSON.stringify(part.input)})`;
    if (part.type === "tool_result") return `tool result: ${contentText(part.content)}`;
    if (part.functionCall) return `tool call ${part.functionCall.name}(${JSON.stringify(part.functionCall.args)})`;
    if (part.functionResponse) return `tool result: ${JSON.stringify(part.functionResponse.response)}`;
    if (part.type === "function_call") return `tool call ${part.name}(${part.arguments})`;
    if (part.type === "function_call_output") return `tool result: ${asText(part.output)}`;
    if (part.type) return `[${part.type}]`;
    return JSON.stringify(part);
  }

  function contentText(content) {
    if (content === undefined || content === null) return "";
    if (Array.isArray(content)) return content.map(partText).join("\n");
    return partText(content);
  }

  // The conversation a request holds: [role, text] pairs.
  function conversation(body) {
    const turns = [];
    if (body.system !== undefined) turns.push(["system", contentText(body.system)]);
    if (body.instructions) turns.push(["instructions", asText(body.instructions)]);
    if (body.systemInstruction) turns.push(["system", contentText(body.systemInstruction.parts)]);
    for (const m of body.messages || []) {
      let text = contentText(m.content);
      for (const call of m.tool_calls || []) {
        const f = call.function || {};
        text += (text ? "\n" : "") + `tool call ${f.name}(${f.arguments})`;
      }
      turns.push([m.role + (m.tool_call_id ? ` (${m.tool_call_id})` : ""), text]);
    }
    for (const c of body.contents || []) turns.push([c.role || "user", contentText(c.parts)]);
    if (typeof body.input === "string") turns.push(["user", body.input]);
    else for (const item of body.input || []) turns.push([item.role || item.type, item.content !== undefined ? contentText(item.content) : partText(item)]);
    return turns;
  }

  function block(title, text) {
    const details = node("details");
    details.append(node("summary", title), node("pre", text));
    return details;
  }

  async function inspect(id) {
    const asked = ++inspected.asked;
    const c = await latest(getJSON(`requests/${encodeURIComponent(id)}`), () => asked === inspected.asked);
    if (c === STALE) return;
    answered("requests");
    for (const row of document.querySelectorAll("#requests-table tr.on")) row.classList.remove("on");
    const picked = document.querySelector(`#requests-table tr[data-request-id="${CSS.escape(id)}"]`);
    if (picked) picked.classList.add("on");
    const parts = [node("h3", `Request ${c.request_id}`)];
    parts.push(table(["Client", "API", "Model", "Provider", "Status", "Duration", "First byte", "Streamed"],
                     [[c.client, c.api, c.model, c.provider || "-", c.status, `${c.duration} s`,
                       c.ttft === null ? "-" : `${c.ttft} s`, c.streamed ? "yes" : "no"]]));
    parts.push(node("h3", "Conversation"));
    let body = null;
    try { body = JSON.parse(c.request); } catch (e) { /* cut: shown raw below */ }
    const turns = node("div", null, {id: "request-conversation"});
    if (body) {
      for (const [role, text] of conversation(body)) {
        const turn = node("div", null, {class: "turn"});
        turn.append(node("strong", role), node("pre", text));
        turns.append(turn);
      }
      const tools = (body.tools || []).map((t) => (t.function || t).name || t.type).filter(Boolean);
      if (tools.length) turns.append(node("p", `Tools offered: ${tools.join(", ")}`, {class: "note"}));
    } else {
      turns.append(node("p", "The request was cut (max_body_bytes): its raw text is below.", {class: "note"}));
    }
    parts.push(turns);
    parts.push(node("h3", "Reply"));
    const reply = node("div", null, {id: "request-reply"});
    if (c.reply) {
      if (c.reply.reasoning) reply.append(block("Reasoning", c.reply.reasoning));
      if (c.reply.text) reply.append(node("pre", c.reply.text));
      for (const call of c.reply.tool_calls) {
        reply.append(node("pre", `tool call ${call.name}(${JSON.stringify(call.arguments, null, 2)})`, {class: "tool-call"}));
      }
      reply.append(node("p", `stop: ${c.reply.stop}`, {class: "note"}));
    } else {
      reply.append(node("pre", c.answer));
    }
    parts.push(reply);
    parts.push(node("h3", "Upstream attempts"));
    parts.push(table(["#", "Key", "Status", "Started", "Answered in", "Error"],
                     c.attempts.map((a, i) => [i + 1, a.key, a.status, `+${a.started.toFixed(3)} s`,
                                               a.seconds === null ? "-" : `${a.seconds.toFixed(3)} s`, a.error])));
    const sent = node("div", null, {id: "request-upstream"});
    c.attempts.forEach((a, i) => sent.append(block(`Attempt ${i + 1}: POST ${a.path} (as sent upstream)`, pretty(a.request))));
    parts.push(sent);
    parts.push(block("The request as the client sent it", pretty(c.request)));
    parts.push(block("The answer as the client got it", c.answer));
    const detail = $("#request-detail");
    detail.replaceChildren(...parts);
    detail.hidden = false;
  }

  // Export

  function exportQuery(format) {
    return `usage?since=${$("#export-since").value}&by=${$("#export-by").value}&format=${format}`;
  }

  function showExport() {
    loadExport().catch(failed);
  }

  async function loadExport() {
    const by = $("#export-by").value;
    const asked = ++exported.asked;  // the since or by chosen after it was asked wins
    const rows = await latest(getJSON(exportQuery("json")), () => asked === exported.asked);
    if (rows === STALE) return;
    answered("export");
    const columns = [by, "requests", "errors", "input_tokens", "output_tokens", "cost_usd"];
    const old = $("#export-table");
    const fresh = table(columns, rows.map((r) => columns.map((c) => r[c]))).firstChild;
    fresh.id = "export-table";
    old.replaceWith(fresh);
  }

  async function download() {
    const response = await api(exportQuery("csv"));
    const blob = await response.blob();
    const url = URL.createObjectURL(blob);
    const link = node("a", null, {href: url, download: `proxycast-usage-by-${$("#export-by").value}.csv`});
    document.body.append(link);
    link.click();
    link.remove();
    setTimeout(() => URL.revokeObjectURL(url), 10000);
  }

  // Wiring

  document.addEventListener("DOMContentLoaded", () => {
    $("#signin-form").addEventListener("submit", (event) => {
      event.preventDefault();
      $("#signin-error").hidden = true;
      signIn($("#key").value.trim()).catch((error) => {
        key = "";
        $("#signin-error").textContent = error instanceof ApiError && error.status === 401
          ? "That key is not one of this gateway's keys." : String(error.message || error);
        $("#signin-error").hidden = false;
      });
    });
    $("#sign-out").addEventListener("click", signOut);
    window.addEventListener("hashchange", route);
    for (const button of document.querySelectorAll("#range button")) {
      button.addEventListener("click", () => { overview.range = button.dataset.range; route(); });
    }
    $("#by").addEventListener("change", () => { overview.by = $("#by").value; route(); });
    $("#overview-refresh").addEventListener("click", () => loadOverview().catch(failed));
    $("#live-pause").addEventListener("click", () => {
      live.paused = !live.paused;
      $("#live-pause").textContent = live.paused ? "Resume" : "Pause";
      if (!live.paused) { live.missed = 0; showMissed(); }
    });
    $("#sessions-since").addEventListener("change", () => loadSessions().catch(failed));
    $("#requests-since").addEventListener("change", () => loadRequests().catch(failed));
    $("#requests-refresh").addEventListener("click", () => loadRequests().catch(failed));
    $("#export-since").addEventListener("change", () => loadExport().catch(failed));
    $("#export-by").addEventListener("change", () => loadExport().catch(failed));
    $("#export-download").addEventListener("click", () => download().catch(failed));
    if (key) signIn(key).catch(() => signOut());
  });
})();
