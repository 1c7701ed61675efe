// hybrid-serve's dashboard: polls /dashboard/data and redraws the table in place (no reload, no
// framework, nothing from another host). The token, where the server needs one, is asked for once and
// kept in this tab's sessionStorage; it is sent as `Authorization: Bearer` on the dashboard's fetches.
"use strict";

(function () {
  const TOKEN_KEY = "hybrid-serve.dashboard.token";
  const body = document.body;
  const root = body.dataset.root || "";
  const needsToken = body.dataset.auth === "bearer";
  const params = new URLSearchParams(window.location.search);
  const refreshS = clamp(Number(params.get("refresh") || 2), 0.2, 300);
  const $ = (id) => document.getElementById(id);

  const view = { offset: 0, limit: Number($("limit").value), q: "" };
  let timer = null;
  let sequence = 0;
  let stopped = false;

  function clamp(value, low, high) {
    return Number.isFinite(value) ? Math.min(high, Math.max(low, value)) : 2;
  }

  function token() {
    return window.sessionStorage.getItem(TOKEN_KEY);
  }

  // --- formatting -----------------------------------------------------------------------------
  function duration(seconds) {
    if (seconds === null || seconds === undefined) return "—";
    const s = Math.max(0, seconds);
    if (s < 1) return Math.round(s * 1000) + " ms";
    if (s < 10) return s.toFixed(1) + " s";
    if (s < 60) return Math.round(s) + " s";
    const whole = Math.round(s);
    if (whole < 3600) return Math.floor(whole / 60) + " min" + (whole % 60 ? " " + (whole % 60) + " s" : "");
    return Math.floor(whole / 3600) + " h" + (whole % 3600 >= 60 ? " " + Math.floor((whole % 3600) / 60) + " min" : "");
  }

  function money(value, currency) {
    try {
      return new Intl.NumberFormat(undefined, { style: "currency", currency: currency || "USD", maximumSignificantDigits: 3 }).format(value);
    } catch (_) {
      return value.toPrecision(3) + " " + (currency || "");
    }
  }

  function clock(epochS) {
    return new Date(epochS * 1000).toLocaleTimeString();
  }

  function el(tag, className, text) {
    const node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined && text !== null) node.textContent = String(text);
    return node;
  }

  // --- sparklines (inline SVG from the page's template) -------------------------------------------
  const W = 120, H = 18;

  function spark(values, kind, label) {
    const svg = $("spark").content.firstElementChild.cloneNode(true);
    const [area, line] = svg.querySelectorAll("path");
    const present = values.filter((v) => v !== null && v !== undefined);
    const max = Math.max(1e-9, ...present);
    const n = values.length;
    const x = (i) => (n > 1 ? (i * W) / (n - 1) : 0);
    const y = (v) => H - 1 - (v / max) * (H - 4);
    svg.classList.add(kind);
    if (kind === "bars") {
      line.setAttribute("d", values.map((v, i) => (v > 0 ? "M" + x(i).toFixed(1) + " " + H + "V" + y(v).toFixed(1) : "")).join(""));
    } else if (kind === "area") {
      const points = values.map((v, i) => x(i).toFixed(1) + " " + y(v || 0).toFixed(1));
      line.setAttribute("d", "M" + points.join("L"));
      area.setAttribute("d", "M0 " + H + "L" + points.join("L") + "L" + W + " " + H + "Z");
    } else {  // "step": each minute's value across its slot; a gap where a minute has no point
      const slot = W / n;
      line.setAttribute("d", values.map((v, i) => (v === null || v === undefined ? ""
        : "M" + (i * slot).toFixed(1) + " " + y(v).toFixed(1) + "H" + ((i + 1) * slot).toFixed(1))).join(""));
    }
    svg.setAttribute("aria-label", label);
    const title = document.createElementNS(svg.namespaceURI, "title");
    title.textContent = label;
    svg.prepend(title);
    return svg;
  }

  function sparkRow(name, values, kind, describe) {
    const row = el("div", "spark-row");
    row.append(el("span", "spark-name", name));
    const text = describe(values);
    row.append(spark(values, kind, name + ": " + text), el("span", "spark-value small", text));
    return row;
  }

  function sum(values) { return values.reduce((a, v) => a + (v || 0), 0); }
  function lastOf(values) { for (let i = values.length - 1; i >= 0; i--) if (values[i] !== null && values[i] !== undefined) return values[i]; return null; }

  // --- the table ------------------------------------------------------------------------------------
  function stateCell(row) {
    const td = el("td", "state");
    const badge = el("span", "badge state-" + String(row.state).replace(/\s+/g, "-"), row.state);
    td.append(badge);
    if (row.last_error) {
      badge.title = row.last_error;
      td.append(el("span", "error small", " !"));
    }
    return td;
  }

  function costCell(row, currency) {
    const td = el("td", "num cost");
    const today = row.cost_today;
    if (!today) {
      td.append(el("span", "muted", "not measured"));
      return td;
    }
    const s = today.container_seconds;
    const idleS = (s.warm_idle || 0) + (s.prewarmed || 0);
    td.title = "container-seconds today: busy " + s.busy + ", idle " + idleS.toFixed(3) + ", cold start " + s.cold_start;
    if (today.cost) {
      const c = today.cost;
      td.textContent = [c.busy, (c.warm_idle || 0) + (c.prewarmed || 0), c.cold_start].map((v) => money(v, currency)).join(" / ");
    } else {
      td.textContent = [s.busy, idleS, s.cold_start].map((v) => duration(v)).join(" / ");
    }
    return td;
  }

  function coldCell(row, now) {
    const td = el("td", "cold");
    const cold = row.last_cold_start;
    if (!cold || cold.total_s === null || cold.total_s === undefined) {
      td.textContent = "—";
      return td;
    }
    td.textContent = duration(cold.total_s) + (cold.at ? ", " + duration(now - cold.at) + " ago" : "");
    if (cold.at) td.title = "at " + clock(cold.at);
    return td;
  }

  function timelineCell(row) {
    const td = el("td", "timeline");
    const t = row.timeline;
    td.append(
      sparkRow("req", t.requests, "bars", (v) => sum(v) + " in the hour"),
      sparkRow("rep", t.replicas, "area", (v) => "peak " + Math.max(...v).toFixed(1) + " a minute"),
      sparkRow("win", t.window_s, "step", (v) => (lastOf(v) === null ? "—" : duration(lastOf(v)))),
    );
    return td;
  }

  function rowOf(row, data) {
    const tr = el("tr");
    tr.dataset.experiment = row.id;
    tr.dataset.state = row.state;
    const id = el("td", "id");
    id.append(el("strong", null, row.id), el("div", "muted small", row.task));
    const replicas = el("td", "num replicas", row.replicas === null ? "—" : row.replicas);
    if (row.in_flight) replicas.append(el("div", "muted small", row.in_flight + " in flight"));
    const windowCell = el("td", "window");
    windowCell.append(el("span", null, duration(row.scaledown_window_s)), el("span", "muted", " · " + row.window_reason));
    if (row.phase && row.phase !== "keep-warm") windowCell.append(el("div", "muted small", row.phase));
    windowCell.title = row.window_detail || "";
    const expires = el("td", "num expires", row.expires_in_s === null ? "—" : row.expires_in_s > 0 ? duration(row.expires_in_s) : "over");
    expires.title = row.idle_s === null ? "no request remembered" : "idle " + duration(row.idle_s) + "; " + row.requests_in_window + " requests in the activity window";
    tr.append(id, stateCell(row), replicas, windowCell, expires, coldCell(row, data.now), costCell(row, data.currency), timelineCell(row));
    return tr;
  }

  function render(data) {
    $("backend").textContent = data.backend + " backend · " + data.policy + " policy";
    const states = $("states");
    states.replaceChildren(...Object.entries(data.states).map(([state, count]) =>
      el("span", "badge state-" + state.replace(/\s+/g, "-"), count + " " + state)));
    $("updated").textContent = "updated " + clock(data.now);
    const first = data.matched ? data.offset + 1 : 0;
    const last = Math.min(data.offset + data.rows.length, data.matched);
    $("range").textContent = first + "–" + last + " of " + data.matched.toLocaleString() +
      (data.q ? " matching (" + data.total.toLocaleString() + " in all)" : "");
    $("prev").disabled = data.offset <= 0;
    $("next").disabled = data.offset + data.limit >= data.matched;
    $("rows").replaceChildren(...data.rows.map((row) => rowOf(row, data)));
    $("empty").hidden = data.rows.length > 0;
    $("error").hidden = true;
  }

  // --- polling ----------------------------------------------------------------------------------------
  function schedule() {
    window.clearTimeout(timer);
    if (!stopped) timer = window.setTimeout(poll, refreshS * 1000);
  }

  async function poll() {
    window.clearTimeout(timer);
    const mine = ++sequence;
    const query = new URLSearchParams({ offset: String(view.offset), limit: String(view.limit), q: view.q });
    const headers = { Accept: "application/json" };
    if (token()) headers.Authorization = "Bearer " + token();
    const abort = new AbortController();
    const deadline = window.setTimeout(() => abort.abort(), Math.max(10, 5 * refreshS) * 1000);
    try {
      const response = await fetch(root + "/dashboard/data?" + query, { headers, cache: "no-store", signal: abort.signal });
      if (mine !== sequence) return;  // a newer request (a search, a page) is on its way
      if (response.status === 401) {
        window.sessionStorage.removeItem(TOKEN_KEY);
        askForToken("The server refused this token.");
        return;
      }
      const data = await response.json();
      if (mine !== sequence) return;
      if (!response.ok) throw new Error((data.error && data.error.message) || "HTTP " + response.status);
      render(data);
    } catch (err) {
      if (mine !== sequence) return;
      $("error").textContent = "Could not update: " + (err.name === "AbortError" ? "no answer in time" : err.message) + " (retrying)";
      $("error").hidden = false;
    } finally {
      window.clearTimeout(deadline);
    }
    if (mine === sequence) schedule();
  }

  function askForToken(message) {
    stopped = true;
    window.clearTimeout(timer);
    $("board").hidden = true;
    $("forget").hidden = true;
    $("login").hidden = false;
    $("login-error").textContent = message || "";
    $("login-error").hidden = !message;
    $("token").focus();
  }

  function open() {
    stopped = false;
    $("login").hidden = true;
    $("board").hidden = false;
    $("forget").hidden = !needsToken;
    poll();
  }

  // --- controls -----------------------------------------------------------------------------------------
  $("refresh").textContent = "refreshes every " + refreshS + " s";
  $("login").addEventListener("submit", (event) => {
    event.preventDefault();
    const value = $("token").value.trim();
    if (!value) return;
    window.sessionStorage.setItem(TOKEN_KEY, value);
    $("token").value = "";
    open();
  });
  $("forget").addEventListener("click", () => {
    window.sessionStorage.removeItem(TOKEN_KEY);
    askForToken("");
  });
  let typing = null;
  $("q").addEventListener("input", () => {
    window.clearTimeout(typing);
    typing = window.setTimeout(() => { view.q = $("q").value.trim(); view.offset = 0; poll(); }, 250);
  });
  $("limit").addEventListener("change", () => { view.limit = Number($("limit").value); view.offset = 0; poll(); });
  $("prev").addEventListener("click", () => { view.offset = Math.max(0, view.offset - view.limit); poll(); });
  $("next").addEventListener("click", () => { view.offset += view.limit; poll(); });

  if (needsToken && !token()) askForToken("");
  else open();
})();
