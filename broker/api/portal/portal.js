/*
 * broker partner portal: a dependency-free single-page app over the same-origin Partner API.
 *
 * Rules this file keeps:
 *  - API strings never become HTML: every node is built with createElement/textContent.
 *  - The partner key lives only in sessionStorage ("broker.partnerKey").
 *  - A portal link (/portal/#token=...) signs in with its token, which is then taken out of the
 *    address bar at once; a read-only link's session shows no control that would change anything
 *    (the API refuses such requests with 403 anyway).
 *  - Polling (registrations list, pending event detail) runs only while its view is shown and the
 *    tab is visible, and re-renders only what changed so open dialogs and forms are left alone.
 */
(function () {
  "use strict";

  const STORAGE_KEY = "broker.partnerKey";
  const LINK_FRAGMENT = "#token=";
  const POLL_MS = 3000;
  const EVENTS_PAGE_SIZE = 50;
  const REG_STATUSES = ["Active", "Suspended", "Restarting", "Paused"];

  const state = {
    key: null,
    readOnly: false,            // a read-only portal link's session
    route: { view: "registrations" },
    registrations: [],          // last list from the API
    regRows: new Map(),         // id -> { row, snapshot }
    eventTypes: null,           // catalog names, or null when unknown
    events: { filters: {}, cursor: null, nextCursor: null, page: 1, token: 0 },
    event: null,                // the event shown in the detail view
    detailToken: 0,
    regPollTimer: null,
    detailPollTimer: null,
    statsPollTimer: null,
    stats: { id: null, period: "24h", token: 0 },
    pollFailing: false,
  };

  const $ = (id) => document.getElementById(id);

  // ---------------------------------------------------------------- DOM helpers

  /** el("td", {className: "x", dataset: {id}}, child, "text") — children may be nodes or strings. */
  function el(tag, props, ...children) {
    const node = document.createElement(tag);
    for (const [name, value] of Object.entries(props || {})) {
      if (value === undefined || value === null) continue;
      if (name === "dataset") Object.assign(node.dataset, value);
      else if (name === "attrs") for (const [a, v] of Object.entries(value)) node.setAttribute(a, v);
      else node[name] = value;
    }
    for (const child of children.flat()) {
      if (child === null || child === undefined || child === false) continue;
      node.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return node;
  }

  function formatTime(iso) {
    const d = new Date(iso);
    if (Number.isNaN(d.getTime())) return String(iso);
    return d.toLocaleString(undefined, { dateStyle: "medium", timeStyle: "medium" });
  }

  /** A <time> whose text is local and readable, with the exact ISO value kept in datetime/title. */
  function timeEl(iso, emptyText = "Never") {
    if (!iso) return el("span", { className: "muted" }, emptyText);
    return el("time", { dateTime: iso, title: iso }, formatTime(iso));
  }

  function badge(kind, status) {
    return el("span", { className: `badge ${kind}-${status}` }, status);
  }

  function routeHref(hash) {
    // <base href="/portal/"> would turn a bare "#/x" into "/portal/#/x", a different document when
    // the page is served at "/portal"; anchoring to the current path keeps navigation in-page.
    return location.pathname + location.search + hash;
  }

  function routeLink(hash, text, props) {
    return el("a", Object.assign({ href: routeHref(hash) }, props), text);
  }

  function show(node, visible) { node.hidden = !visible; }

  // ---------------------------------------------------------------- messages

  let statusTimer = null;

  function announce(message) {
    clearAlert();
    const region = $("status");
    region.textContent = message;
    clearTimeout(statusTimer);
    statusTimer = setTimeout(() => { region.textContent = ""; }, 10000);
  }

  function clearAlert() { $("alert").replaceChildren(); }

  /** Shows an RFC 9457 problem (or any Error) in the role="alert" region. */
  function showError(err, heading) {
    if (err && err.signedOut) return;         // signOut() has already said why
    const problem = (err && err.problem) || { title: "Error", detail: String((err && err.message) || err) };
    const region = $("alert");
    const children = [el("p", { className: "alert-title" }, heading || problem.title || "Request failed")];
    if (problem.detail) children.push(el("p", { className: "alert-detail" }, problem.detail));
    if (Array.isArray(problem.errors) && problem.errors.length) {
      children.push(el("ul", { className: "alert-errors" }, problem.errors.map((e) =>
        el("li", {}, el("strong", { className: "error-field" }, e.field || "request"), ": ",
          el("span", { className: "error-message" }, e.message || "")))));
    }
    region.replaceChildren(...children);
  }

  // ---------------------------------------------------------------- API

  class ApiError extends Error {
    constructor(status, problem) {
      super(problem.detail || problem.title || `HTTP ${status}`);
      this.status = status;
      this.problem = problem;
    }
  }

  async function api(method, path, body, keyOverride) {
    const key = keyOverride || state.key;
    const headers = { Accept: "application/json, application/problem+json" };
    if (key) headers.Authorization = `Bearer ${key}`;
    if (body !== undefined) headers["Content-Type"] = "application/json";
    let res;
    try {
      res = await fetch(path, {
        method, headers, body: body === undefined ? undefined : JSON.stringify(body),
        credentials: "omit", cache: "no-store",
      });
    } catch (e) {
      throw new ApiError(0, { title: "Network error", status: 0, detail: `The broker could not be reached (${e.message}).` });
    }
    const text = await res.text();
    let data = null;
    if (text) {
      try { data = JSON.parse(text); } catch (e) { data = null; }
    }
    if (!res.ok) {
      const problem = data && typeof data === "object" ? data
        : { title: res.statusText || "Request failed", status: res.status, detail: text.slice(0, 300) || `HTTP ${res.status}` };
      const error = new ApiError(res.status, problem);
      // A key revoked mid-session: drop it rather than polling with it forever.
      if (res.status === 401 && !keyOverride && state.key) {
        signOut("Your key is no longer accepted. Please sign in again.");
        error.signedOut = true;
      }
      throw error;
    }
    return data;
  }

  const regPath = (id, suffix = "") => `/webhooks/v1/registrations/${encodeURIComponent(id)}${suffix}`;
  const eventPath = (id, suffix = "") => `/webhooks/v1/events/${encodeURIComponent(id)}${suffix}`;

  // ---------------------------------------------------------------- session

  async function signIn(event) {
    event.preventDefault();
    clearAlert();
    const input = $("api-key");
    const key = input.value.trim();
    if (!key) { showError({ problem: { detail: "Enter your partner API key." } }, "Sign-in failed"); input.focus(); return; }
    const button = $("sign-in");
    button.disabled = true;
    try {
      const session = await api("GET", "/webhooks/v1/session", undefined, key);
      sessionStorage.setItem(STORAGE_KEY, key);
      state.key = key;
      input.value = "";
      applySession(session);
      announce("Signed in.");
      enterApp();
    } catch (err) {
      if (err.status === 401 || err.status === 403) showError(err, "That key was not accepted");
      else showError(err, "Sign-in failed");
      input.focus();
    } finally {
      button.disabled = false;
    }
  }

  /** Takes a portal link's token out of the address (history, bookmarks, screenshots). */
  function takeLinkToken() {
    if (!location.hash.startsWith(LINK_FRAGMENT)) return null;
    const token = decodeURIComponent(location.hash.slice(LINK_FRAGMENT.length));
    history.replaceState(null, "", `${location.pathname}${location.search}#/registrations`);
    return token || null;
  }

  async function signInWithLink(token) {
    sessionStorage.removeItem(STORAGE_KEY);  // a link replaces whoever was signed in here
    try {
      const session = await api("GET", "/webhooks/v1/session", undefined, token);
      sessionStorage.setItem(STORAGE_KEY, token);
      state.key = token;
      applySession(session);
      announce(session.readOnly ? "Signed in by link (read-only)." : "Signed in by link.");
      enterApp();
    } catch (err) {
      showShell(false);
      if (err.status === 401) {
        showError({ problem: { detail: "This sign-in link has expired or was revoked. Ask for a new link, or sign in with a partner API key." } }, "Sign-in link not accepted");
      } else {
        showError(err, "Sign-in link not accepted");
      }
      $("api-key").focus();
    }
  }

  /** What the credential may do, as GET /webhooks/v1/session says. */
  function applySession(session) {
    state.readOnly = Boolean(session && session.readOnly);
    const expires = session && session.expiresAt;
    const note = $("session-note");
    if (expires) {
      note.replaceChildren(
        state.readOnly ? "Read-only session: you can look, but not change anything. " : "Signed in by link. ",
        "It ends ", timeEl(expires), ".");
    } else {
      note.replaceChildren();
    }
    show(note, Boolean(expires));
    show($("create-section"), !state.readOnly);
    show($("event-resend"), !state.readOnly);
  }

  async function resumeSession(key) {
    state.key = key;
    try {
      applySession(await api("GET", "/webhooks/v1/session"));
    } catch (err) {
      if (err.signedOut) return;    // the stored key is no longer accepted
      // Unreachable for now: carry on; the API still refuses whatever this key may not do.
    }
    enterApp();
  }

  function signOut(message) {
    sessionStorage.removeItem(STORAGE_KEY);
    state.key = null;
    applySession(null);
    stopRegPolling();
    stopDetailPolling();
    stopStatsPolling();
    state.stats.id = null;
    $("stats-summary").replaceChildren();
    $("stats-chart").replaceChildren();
    state.registrations = [];
    state.regRows.clear();
    state.event = null;
    state.eventTypes = null;
    $("registrations-body").replaceChildren();
    $("events-body").replaceChildren();
    hidePanels();
    for (const d of document.querySelectorAll("dialog[open]")) d.close();
    showShell(false);
    if (message) showError({ problem: { detail: message } }, "Signed out");
    else announce("Signed out.");
    $("api-key").focus();
  }

  function showShell(signedIn) {
    show($("main-nav"), signedIn);
    show($("sign-out"), signedIn);
    show($("signin"), !signedIn);
    if (!signedIn) for (const id of ["registrations", "events", "event-detail", "registration-stats"]) show($(id), false);
  }

  function enterApp() {
    showShell(true);
    loadEventTypes();
    route(true);
  }

  // ---------------------------------------------------------------- routing

  function parseRoute() {
    const raw = location.hash.replace(/^#/, "");
    const q = raw.indexOf("?");
    const path = q >= 0 ? raw.slice(0, q) : raw;
    const params = new URLSearchParams(q >= 0 ? raw.slice(q + 1) : "");
    const parts = path.split("/").filter(Boolean);
    if (parts[0] === "events" && parts[1]) return { view: "event", id: decodeURIComponent(parts[1]) };
    if (parts[0] === "events") return { view: "events", params };
    if (parts[0] === "registrations" && parts[1]) {
      return { view: "registration", id: decodeURIComponent(parts[1]), period: params.get("period") };
    }
    return { view: "registrations" };
  }

  function route(moveFocus) {
    if (!state.key) return;
    state.route = parseRoute();
    const view = state.route.view;
    show($("registrations"), view === "registrations");
    show($("events"), view === "events");
    show($("event-detail"), view === "event");
    show($("registration-stats"), view === "registration");
    for (const [id, views] of [["nav-registrations", ["registrations", "registration"]], ["nav-events", ["events", "event"]]]) {
      if (views.includes(view)) $(id).setAttribute("aria-current", "page");
      else $(id).removeAttribute("aria-current");
    }
    stopRegPolling();
    stopDetailPolling();
    stopStatsPolling();
    if (view === "registrations") {
      document.title = "Registrations · Partner portal";
      renderRegistrations(state.registrations);
      refreshRegistrations().finally(scheduleRegPoll);
    } else if (view === "events") {
      document.title = "Events · Partner portal";
      openEvents(state.route.params);
    } else if (view === "registration") {
      document.title = "Delivery health · Partner portal";
      openStats(state.route.id, state.route.period);
    } else {
      document.title = "Event · Partner portal";
      openEventDetail(state.route.id);
    }
    if (moveFocus) {
      const heading = { registrations: "registrations-heading", events: "events-heading", event: "event-detail-heading", registration: "stats-heading" }[view];
      $(heading).focus({ preventScroll: false });
    }
  }

  function navigate(hash) {
    if (location.hash === hash) route(true);
    else location.hash = hash;
  }

  // ---------------------------------------------------------------- registrations

  // The list pages (limit, cursor, nextCursor); the portal shows every registration.
  async function allRegistrations(keyOverride) {
    const data = [];
    let cursor = null;
    do {
      const query = "?limit=500" + (cursor ? "&cursor=" + encodeURIComponent(cursor) : "");
      const page = await api("GET", "/webhooks/v1/registrations" + query, undefined, keyOverride);
      data.push(...((page && page.data) || []));
      cursor = (page && page.nextCursor) || null;
    } while (cursor);
    return { data };
  }

  async function refreshRegistrations() {
    const key = state.key;
    try {
      const list = await allRegistrations();
      if (key !== state.key) return;           // signed out meanwhile
      state.registrations = (list && list.data) || [];
      state.pollFailing = false;
      renderRegistrations(state.registrations);
      fillRegistrationSelect();
    } catch (err) {
      // Repeating the same failure every 3 s would spam screen readers: report the first only.
      if (state.key && !state.pollFailing) showError(err, "Could not load registrations");
      state.pollFailing = true;
    }
  }

  function regPollWanted() { return Boolean(state.key) && state.route.view === "registrations" && !document.hidden; }

  function scheduleRegPoll() {
    clearTimeout(state.regPollTimer);
    state.regPollTimer = regPollWanted() ? setTimeout(async () => {
      state.regPollTimer = null;
      if (!regPollWanted()) return;
      await refreshRegistrations();
      scheduleRegPoll();
    }, POLL_MS) : null;
  }

  function stopRegPolling() { clearTimeout(state.regPollTimer); state.regPollTimer = null; }

  function actionsFor(status) {
    if (state.readOnly) return ["stats", "events"];
    const actions = ["edit"];
    if (status === "Active" || status === "Restarting") actions.push("pause");
    if (status === "Paused") actions.push("unpause");
    if (status === "Suspended") actions.push("restart");
    actions.push("test", "replay", "rotate-secret", "stats", "events", "delete");
    return actions;
  }

  const ACTION_LABELS = {
    edit: "Edit", pause: "Pause", unpause: "Unpause", restart: "Restart", test: "Test", replay: "Replay",
    "rotate-secret": "Rotate secret", stats: "Health", events: "Events", delete: "Delete",
  };

  /** The delivery circuit breaker, shown only while it holds deliveries back (not a status). */
  function breakerNote(breaker) {
    if (!breaker || breaker.state === "closed") return null;
    const title = breaker.nextProbeAt ? `next probe ${breaker.nextProbeAt}` : "";
    return el("span", { className: `badge breaker-${breaker.state}`, attrs: { title } },
      `breaker ${breaker.state}`);
  }

  function buildRegistrationRow(reg) {
    const urlId = `reg-url-${reg.id}`;
    const status = String(reg.status || "");
    const types = Array.isArray(reg.eventTypes) ? reg.eventTypes : [];
    return el("tr", { dataset: { registrationId: reg.id, status } },
      el("td", { className: "cell-url" },
        el("span", { id: urlId, className: "url" }, reg.url || ""),
        reg.description ? el("span", { className: "description" }, reg.description) : null,
        policySummary(reg) ? el("span", { className: "policy-summary" }, policySummary(reg)) : null),
      el("td", {}, el("ul", { className: "tags" }, types.map((t) => el("li", {}, el("code", {}, t))))),
      el("td", {}, badge("status", status), breakerNote(reg.breaker)),
      el("td", { className: "num" }, String(reg.failureCount ?? 0)),
      el("td", {}, timeEl(reg.lastSuccessAt)),
      el("td", {}, timeEl(reg.lastFailureAt)),
      el("td", {}, el("div", { className: "row-actions" }, actionsFor(status).map((action) =>
        el("button", {
          type: "button",
          className: action === "delete" ? "button-small button-danger" : "button-small",
          dataset: { action },
          attrs: { "aria-describedby": urlId },
        }, ACTION_LABELS[action])))));
  }

  /** Keyed, minimal re-render: unchanged rows (and the focus inside them) stay untouched. */
  function renderRegistrations(list) {
    const body = $("registrations-body");
    const seen = new Set();
    list.forEach((reg, index) => {
      seen.add(reg.id);
      const snapshot = JSON.stringify(reg);
      const entry = state.regRows.get(reg.id);
      let row = entry && entry.row;
      if (!entry || entry.snapshot !== snapshot) {
        const fresh = buildRegistrationRow(reg);
        if (row) {
          const focused = row.contains(document.activeElement) ? document.activeElement : null;
          row.replaceWith(fresh);
          if (focused) {
            const again = fresh.querySelector(`[data-action="${focused.dataset.action}"]`) || fresh.querySelector("button");
            if (again) again.focus();
          }
        }
        row = fresh;
        state.regRows.set(reg.id, { row, snapshot });
      }
      if (body.children[index] !== row) body.insertBefore(row, body.children[index] || null);
    });
    for (const [id, entry] of state.regRows) {
      if (!seen.has(id)) { entry.row.remove(); state.regRows.delete(id); }
    }
    show($("registrations-empty"), list.length === 0);
  }

  function upsertRegistration(reg) {
    if (!reg || !reg.id) return;
    const i = state.registrations.findIndex((r) => r.id === reg.id);
    if (i >= 0) state.registrations[i] = reg; else state.registrations.push(reg);
    renderRegistrations(state.registrations);
  }

  function findRegistration(id) { return state.registrations.find((r) => r.id === id); }

  function regLabel(reg) { return reg ? (reg.description ? `${reg.description} (${reg.url})` : reg.url) : "registration"; }

  async function onRegistrationAction(event) {
    const button = event.target.closest("button[data-action]");
    if (!button) return;
    const row = button.closest("tr[data-registration-id]");
    const id = row.dataset.registrationId;
    const reg = findRegistration(id);
    const action = button.dataset.action;
    if (action === "events") { navigate(`#/events?registrationId=${encodeURIComponent(id)}`); return; }
    if (action === "stats") { navigate(`#/registrations/${encodeURIComponent(id)}`); return; }
    if (action === "edit") { openEditDialog(reg, button); return; }
    if (action === "replay") { openReplay(reg); return; }
    clearAlert();
    button.disabled = true;
    try {
      if (action === "pause" || action === "unpause") {
        upsertRegistration(await api("POST", regPath(id, `/${action}`), {}));
        announce(action === "pause" ? "Registration paused." : "Registration unpaused.");
      } else if (action === "restart") {
        const choice = await restartDialog(button);
        if (!choice) return;
        upsertRegistration(await api("POST", regPath(id, "/restart"), { resendFailed: choice.resendFailed }));
        announce(choice.resendFailed ? "Registration restarting; failed events re-queued." : "Registration restarting.");
      } else if (action === "delete") {
        const ok = await confirmDialog(`Delete the registration for ${regLabel(reg)}? Its queued events are discarded. This cannot be undone.`, "Delete", button);
        if (!ok) return;
        await api("DELETE", regPath(id));
        state.registrations = state.registrations.filter((r) => r.id !== id);
        renderRegistrations(state.registrations);
        fillRegistrationSelect();
        announce("Registration deleted.");
        $("registrations-heading").focus();
      } else if (action === "test") {
        button.textContent = "Testing…";
        const result = await api("POST", regPath(id, "/test"), {});
        showTestResult(reg, result);
      } else if (action === "rotate-secret") {
        const result = await api("POST", regPath(id, "/rotate-secret"), { graceSeconds: 86400 });
        showSecret(result.secret, `New secret for ${regLabel(reg)}. The previous secret stays valid for 24 hours.`);
        announce("Secret rotated.");
      }
    } catch (err) {
      showError(err, `Could not ${ACTION_LABELS[action].toLowerCase()} the registration`);
    } finally {
      if (button.isConnected) {
        button.disabled = false;
        button.textContent = ACTION_LABELS[action];
      }
    }
  }

  function hidePanels() {
    show($("secret-panel"), false);
    $("secret-value").value = "";
    show($("test-result"), false);
    show($("replay-panel"), false);
  }

  function showSecret(secret, context) {
    $("secret-context").textContent = context;
    $("secret-value").value = secret || "";
    show($("secret-panel"), true);
    $("secret-value").focus();
    $("secret-value").select();
  }

  async function copySecret() {
    const input = $("secret-value");
    try {
      await navigator.clipboard.writeText(input.value);
    } catch (e) {
      input.select();
      document.execCommand("copy");
    }
    announce("Secret copied to the clipboard.");
  }

  function showTestResult(reg, result) {
    const attempt = (result && result.attempt) || {};
    const panel = $("test-result");
    panel.dataset.success = String(Boolean(result && result.success));
    $("test-result-summary").replaceChildren(
      badge("event", result && result.success ? "Success" : "Failed"), " ",
      result && result.success ? "The test delivery succeeded" : "The test delivery failed",
      ` for ${regLabel(reg)}.`);
    const rows = [
      ["Response status", attempt.responseStatus ?? "none"],
      ["Duration", attempt.durationMs != null ? `${attempt.durationMs} ms` : "—"],
      ["Attempted", attempt.attemptedAt ? timeEl(attempt.attemptedAt) : "—"],
      ["Error", attempt.error || "none"],
      ["Response excerpt", el("pre", { className: "body-excerpt" }, attempt.responseBody || "(empty)")],
    ];
    $("test-result-attempt").replaceChildren(...rows.flatMap(([k, v]) => [el("dt", {}, k), el("dd", {}, v)]));
    show(panel, true);
    $("test-result-heading").focus();
    announce(result && result.success ? "Test delivery succeeded." : "Test delivery failed.");
  }

  // ---------------------------------------------------------------- replay

  /** The Replay panel for one registration: from / until (local time) and statuses. */
  function openReplay(reg) {
    const panel = $("replay-panel");
    panel.dataset.registrationId = reg.id;
    $("replay-context").textContent =
      `Event objects of ${regLabel(reg)} created in this range, with these statuses, are queued again for delivery (at most 100000 per replay).`;
    if (!$("replay-since").value) $("replay-since").value = isoToLocalInput(new Date(Date.now() - 86400000).toISOString());
    const result = $("replay-result");
    result.textContent = "";
    delete result.dataset.outcome;
    show(panel, true);
    $("replay-heading").focus();
  }

  async function submitReplay(event) {
    event.preventDefault();
    const id = $("replay-panel").dataset.registrationId;
    const result = $("replay-result");
    const body = {
      since: localInputToIso($("replay-since").value),
      status: ["replay-status-failed", "replay-status-success"].filter((b) => $(b).checked).map((b) => $(b).value),
    };
    const until = localInputToIso($("replay-until").value);
    if (until) body.until = until;
    const button = $("replay-submit");
    button.disabled = true;
    result.textContent = "";
    try {
      const answer = await api("POST", regPath(id, "/replay"), body);
      const n = answer.requeued;
      result.dataset.outcome = "ok";
      result.textContent = `${n} event object${n === 1 ? "" : "s"} queued again.`;
      announce(result.textContent);
    } catch (err) {
      const problem = (err && err.problem) || {};
      const fields = Array.isArray(problem.errors) ? problem.errors.map((e) => `${e.field}: ${e.message}`) : [];
      result.dataset.outcome = "error";
      result.textContent = [problem.detail || String((err && err.message) || err), ...fields].join(" — ");
    } finally {
      button.disabled = false;
    }
  }

  function parseEventTypes(text) {
    return [...new Set(String(text).split(/[\s,]+/).map((s) => s.trim()).filter(Boolean))];
  }

  async function loadEventTypes() {
    try {
      const res = await api("GET", "/webhooks/v1/event-types");
      const items = Array.isArray(res) ? res : (res && (res.data || res.eventTypes)) || [];
      state.eventTypes = items.map((t) => (typeof t === "string" ? { name: t } : t)).filter((t) => t && t.name);
    } catch (err) {
      state.eventTypes = null;                 // the free-text field still works
    }
    renderEventTypeOptions();
  }

  function renderEventTypeOptions() {
    const list = $("create-event-type-list");
    const types = state.eventTypes || [];
    const chosen = new Set(parseEventTypes($("create-event-types").value));
    list.replaceChildren(...types.map((t, i) => {
      const id = `create-event-type-${i}`;
      return el("div", { className: "checkbox" },
        el("input", { type: "checkbox", id, value: t.name, checked: chosen.has(t.name), name: "event-type" }),
        el("label", { htmlFor: id }, el("code", {}, t.name), t.description ? ` — ${t.description}` : ""));
    }));
    show($("create-event-type-options"), types.length > 0);
  }

  function syncEventTypeText(event) {
    const box = event.target;
    if (box.type !== "checkbox") return;
    const field = $("create-event-types");
    let names = parseEventTypes(field.value);
    if (box.checked && !names.includes(box.value)) names.push(box.value);
    if (!box.checked) names = names.filter((n) => n !== box.value);
    field.value = names.join(", ");
  }

  function syncEventTypeBoxes() {
    const chosen = new Set(parseEventTypes($("create-event-types").value));
    for (const box of $("create-event-type-list").querySelectorAll("input[type=checkbox]")) box.checked = chosen.has(box.value);
  }

  async function createRegistration(event) {
    event.preventDefault();
    clearAlert();
    const body = {
      url: $("create-url").value.trim(),
      eventTypes: parseEventTypes($("create-event-types").value),
    };
    const description = $("create-description").value.trim();
    const basicAuth = $("create-basic-auth").value;
    if (description) body.description = description;
    if (basicAuth) body.basicAuth = basicAuth;
    const secret = $("create-secret").value;
    if (secret) body.secret = secret;
    const policy = readPolicyFields("create");
    const delivery = Object.fromEntries(Object.entries(policy.delivery).filter(([, v]) => v !== null));
    const signature = Object.fromEntries(Object.entries(policy.signature).filter(([, v]) => v !== null));
    if (Object.keys(delivery).length) body.delivery = delivery;
    if (Object.keys(signature).length) body.signature = signature;
    if (Object.keys(policy.headers).length) body.headers = policy.headers;
    const button = $("create-submit");
    button.disabled = true;
    try {
      const reg = await api("POST", "/webhooks/v1/registrations", body);
      $("create-form").reset();
      fillPolicyFields("create", null);
      syncEventTypeBoxes();
      upsertRegistration(Object.fromEntries(Object.entries(reg).filter(([k]) => k !== "secret")));
      fillRegistrationSelect();
      showSecret(reg.secret, `Registration created for ${regLabel(reg)}. Use this secret to verify webhook signatures.`);
      announce("Registration created.");
    } catch (err) {
      showError(err, "Could not create the registration");
    } finally {
      button.disabled = false;
    }
  }


  // ---------------------------------------------------------------- delivery policy

  /* One set of inputs for a registration's delivery policy, built twice: into the create form
     (prefix "create") and the edit dialog (prefix "edit"). Empty means "the global default". */
  const POLICY_NUMBERS = [
    ["timeoutSeconds", "Timeout (seconds)", "1 to 30; empty: the broker's default.", "0.1"],
    ["suspendAfterConsecutiveFailures", "Suspend after consecutive failures", "1 to 1000 failed attempts in a row, test deliveries included; empty: only when retries run out.", "1"],
    ["rateLimitPerSecond", "Rate limit (attempts per second)", "0.1 to 10000, across all workers; empty: no limit.", "0.1"],
  ];
  const SIGNATURE_TEXTS = [
    ["header", "Signature header", "Default X-Webhook-Signature."],
    ["prefix", "Signature prefix", "Default sha256=."],
    ["timestampHeader", "Timestamp header", "Optional, e.g. Request-Timestamp: the HMAC then covers \"{timestamp}.{body}\"."],
  ];

  function policyFields(prefix) {
    const id = (name) => `${prefix}-policy-${name}`;
    const field = (name, label, hint, input) => el("div", { className: "field" },
      el("label", { htmlFor: id(name) }, label), input,
      hint ? el("p", { className: "hint", id: `${id(name)}-hint` }, hint) : null);
    const text = (name, extra) => el("input", { type: "text", id: id(name), spellcheck: false, autocomplete: "off",
      attrs: { "aria-describedby": `${id(name)}-hint` }, ...extra });
    const select = (name, options) => el("select", { id: id(name) },
      options.map(([value, label]) => el("option", { value }, label)));
    const hmacOnly = el("div", { id: id("hmac"), className: "policy-hmac" },
      SIGNATURE_TEXTS.map(([name, label, hint]) => field(name, label, hint, text(name))));
    const scheme = select("scheme", [["", "Default (Standard Webhooks)"], ["standard-webhooks", "Standard Webhooks"],
      ["hmac-sha256-hex", "Hex HMAC-SHA256 in one header"], ["none", "None (no signature header)"]]);
    scheme.addEventListener("change", () => show(hmacOnly, scheme.value === "hmac-sha256-hex"));
    return el("fieldset", { className: "policy", id: id("fieldset") },
      el("legend", {}, "Delivery policy"),
      POLICY_NUMBERS.map(([name, label, hint, step]) =>
        field(name, label, hint, el("input", { type: "number", id: id(name), min: "0", step,
          attrs: { "aria-describedby": `${id(name)}-hint` } }))),
      field("retrySchedule", "Retry delays (seconds)", "Comma-separated, e.g. 30, 300, 1800; \"none\" for a single attempt; empty: the broker's default.", text("retrySchedule", { placeholder: "30, 300, 1800" })),
      field("ordering", "Ordering", "FIFO: one attempt at a time, in creation order; a failing event holds back the later ones.",
        select("ordering", [["", "Default (unordered)"], ["unordered", "Unordered"], ["fifo", "FIFO"]])),
      field("scheme", "Signature", null, scheme),
      hmacOnly,
      field("headers", "Extra headers", "One per line, Name: value.",
        el("textarea", { id: id("headers"), rows: 3, spellcheck: false, attrs: { "aria-describedby": `${id("headers")}-hint` } })));
  }

  function fillPolicyFields(prefix, reg) {
    const id = (name) => `${prefix}-policy-${name}`;
    const d = (reg && reg.delivery) || {};
    const s = (reg && reg.signature) || {};
    for (const [name] of POLICY_NUMBERS) $(id(name)).value = d[name] ?? "";
    const schedule = d.retrySchedule;
    $(id("retrySchedule")).value = Array.isArray(schedule) ? (schedule.length ? schedule.join(", ") : "none") : "";
    $(id("ordering")).value = d.ordering || "";
    $(id("scheme")).value = s.scheme || "";
    for (const [name] of SIGNATURE_TEXTS) $(id(name)).value = s[name] ?? "";
    show($(id("hmac")), s.scheme === "hmac-sha256-hex");
    $(id("headers")).value = Object.entries((reg && reg.headers) || {}).map(([k, v]) => `${k}: ${v}`).join("\n");
  }

  /** The policy as the inputs say, every field present (null = default); strings the API checks. */
  function readPolicyFields(prefix) {
    const id = (name) => `${prefix}-policy-${name}`;
    const number = (name) => { const raw = $(id(name)).value.trim(); return raw === "" ? null : Number(raw); };
    const delivery = {};
    for (const [name] of POLICY_NUMBERS) delivery[name] = number(name);
    const schedule = $(id("retrySchedule")).value.trim();
    delivery.retrySchedule = schedule === "" ? null : schedule.toLowerCase() === "none" ? []
      : schedule.split(",").map((x) => x.trim()).filter(Boolean).map((x) => (Number.isNaN(Number(x)) ? x : Number(x)));
    delivery.ordering = $(id("ordering")).value || null;
    const scheme = $(id("scheme")).value || null;
    const signature = { scheme, header: null, prefix: null, timestampHeader: null };
    if (scheme === "hmac-sha256-hex") {
      for (const [name] of SIGNATURE_TEXTS) {
        const raw = $(id(name)).value;
        signature[name] = name === "prefix" ? (raw === "" ? null : raw) : (raw.trim() || null);
      }
    }
    const headers = {};
    for (const line of $(id("headers")).value.split("\n")) {
      if (!line.trim()) continue;
      const at = line.indexOf(":");
      if (at < 0) headers[line.trim()] = "";       // the API names the bad header
      else headers[line.slice(0, at).trim()] = line.slice(at + 1).trim();
    }
    return { delivery, signature, headers };
  }

  /** What differs from the registration's stored policy, as a merge patch. */
  function policyPatch(reg, policy) {
    const patch = {};
    for (const part of ["delivery", "signature"]) {
      const before = reg[part] || {};
      const changed = Object.fromEntries(Object.entries(policy[part])
        .filter(([k, v]) => JSON.stringify(v) !== JSON.stringify(before[k] ?? null)));
      if (Object.keys(changed).length) patch[part] = changed;
    }
    const before = reg.headers || {};
    const headers = {};
    for (const name of Object.keys(before)) if (!(name in policy.headers)) headers[name] = null;
    for (const [name, value] of Object.entries(policy.headers)) if (before[name] !== value) headers[name] = value;
    if (Object.keys(headers).length) patch.headers = headers;
    return patch;
  }

  /** One line for the registrations table: only what differs from the defaults. */
  function policySummary(reg) {
    const d = reg.delivery || {};
    const s = reg.signature || {};
    const parts = [];
    if (d.timeoutSeconds != null) parts.push(`timeout ${d.timeoutSeconds} s`);
    if (Array.isArray(d.retrySchedule)) parts.push(d.retrySchedule.length ? `retries ${d.retrySchedule.join("/")} s` : "single attempt");
    if (d.suspendAfterConsecutiveFailures != null) parts.push(`suspend after ${d.suspendAfterConsecutiveFailures} failures`);
    if (d.rateLimitPerSecond != null) parts.push(`${d.rateLimitPerSecond}/s`);
    if (d.ordering === "fifo") parts.push("FIFO");
    if (s.scheme === "hmac-sha256-hex") parts.push(`${s.header || "X-Webhook-Signature"}: ${s.prefix ?? "sha256="}<hex>`);
    else if (s.scheme === "none") parts.push("unsigned");
    const headers = Object.keys(reg.headers || {});
    if (headers.length) parts.push(`+ ${headers.join(", ")}`);
    return parts.join(" · ");
  }

  // ---------------------------------------------------------------- dialogs

  /** Focuses `button`, or its stand-in if polling has re-rendered its row meanwhile. */
  function refocus(button) {
    if (!button) return;
    if (button.isConnected) { button.focus(); return; }
    const id = button.closest("tr") && button.closest("tr").dataset.registrationId;
    const entry = id && state.regRows.get(id);
    const target = entry && (entry.row.querySelector(`[data-action="${button.dataset.action}"]`) || entry.row.querySelector("button"));
    if (target) target.focus();
  }

  /** Opens a <dialog>, resolves with onClose(result) once it closes, and returns focus. */
  function runDialog(dialog, setup, returnFocus) {
    return new Promise((resolve) => {
      let result = null;
      const finish = (value) => { result = value; dialog.close(); };
      const cleanup = setup(finish);
      dialog.addEventListener("close", () => {
        cleanup();
        refocus(returnFocus);
        resolve(result);
      }, { once: true });
      dialog.showModal();
    });
  }

  function confirmDialog(message, okLabel, returnFocus) {
    const dialog = $("confirm-dialog");
    $("confirm-message").textContent = message;
    $("confirm-ok").textContent = okLabel;
    return runDialog(dialog, (finish) => {
      const ok = () => finish(true);
      const cancel = () => finish(false);
      $("confirm-ok").addEventListener("click", ok);
      $("confirm-cancel").addEventListener("click", cancel);
      setTimeout(() => $("confirm-cancel").focus());
      return () => {
        $("confirm-ok").removeEventListener("click", ok);
        $("confirm-cancel").removeEventListener("click", cancel);
      };
    }, returnFocus).then(Boolean);
  }

  function restartDialog(returnFocus) {
    $("restart-resend-failed").checked = false;
    return runDialog($("restart-dialog"), (finish) => {
      const ok = () => finish({ resendFailed: $("restart-resend-failed").checked });
      const cancel = () => finish(null);
      $("restart-ok").addEventListener("click", ok);
      $("restart-cancel").addEventListener("click", cancel);
      setTimeout(() => $("restart-resend-failed").focus());
      return () => {
        $("restart-ok").removeEventListener("click", ok);
        $("restart-cancel").removeEventListener("click", cancel);
      };
    }, returnFocus);
  }

  function openEditDialog(reg, returnFocus) {
    if (!reg) return;
    const types = Array.isArray(reg.eventTypes) ? reg.eventTypes : [];
    $("edit-url").value = reg.url || "";
    $("edit-event-types").value = types.join(", ");
    $("edit-description").value = reg.description || "";
    $("edit-basic-auth").value = "";
    $("edit-clear-basic-auth").checked = false;
    fillPolicyFields("edit", reg);
    runDialog($("edit-dialog"), (finish) => {
      const submit = async (event) => {
        event.preventDefault();
        const patch = {};
        const url = $("edit-url").value.trim();
        const newTypes = parseEventTypes($("edit-event-types").value);
        const description = $("edit-description").value.trim();
        if (url !== (reg.url || "")) patch.url = url;
        if (JSON.stringify(newTypes) !== JSON.stringify(types)) patch.eventTypes = newTypes;
        if (description !== (reg.description || "")) patch.description = description;
        if ($("edit-clear-basic-auth").checked) patch.basicAuth = null;
        else if ($("edit-basic-auth").value) patch.basicAuth = $("edit-basic-auth").value;
        Object.assign(patch, policyPatch(reg, readPolicyFields("edit")));
        if (Object.keys(patch).length === 0) { finish(null); announce("Nothing changed."); return; }
        clearAlert();
        $("edit-save").disabled = true;
        try {
          upsertRegistration(await api("PATCH", regPath(reg.id), patch));
          finish(true);
          announce("Registration updated.");
        } catch (err) {
          showError(err, "Could not update the registration");   // the dialog stays open to fix input
        } finally {
          $("edit-save").disabled = false;
        }
      };
      const cancel = () => finish(null);
      $("edit-form").addEventListener("submit", submit);
      $("edit-cancel").addEventListener("click", cancel);
      setTimeout(() => $("edit-url").focus());
      return () => {
        $("edit-form").removeEventListener("submit", submit);
        $("edit-cancel").removeEventListener("click", cancel);
      };
    }, returnFocus);
  }

  // ---------------------------------------------------------------- events list

  const FILTER_FIELDS = [
    ["registrationId", "filter-registration"], ["eventName", "filter-event-name"], ["status", "filter-status"],
    ["createdAfter", "filter-created-after"], ["createdBefore", "filter-created-before"],
  ];

  function isoToLocalInput(iso) {
    const d = new Date(iso);
    if (Number.isNaN(d.getTime())) return "";
    const pad = (n) => String(n).padStart(2, "0");
    return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())}T${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
  }

  function localInputToIso(value) {
    if (!value) return "";
    const d = new Date(value);              // datetime-local values parse as local time
    return Number.isNaN(d.getTime()) ? "" : d.toISOString();
  }

  function fillRegistrationSelect(preferred) {
    const select = $("filter-registration");
    const current = preferred === undefined ? select.value : preferred;
    const options = [el("option", { value: "" }, "All registrations")];
    for (const reg of state.registrations) options.push(el("option", { value: reg.id }, regLabel(reg)));
    if (current && !state.registrations.some((r) => r.id === current)) options.push(el("option", { value: current }, current));
    select.replaceChildren(...options);
    select.value = current;
  }

  function openEvents(params) {
    const filters = {};
    for (const [name] of FILTER_FIELDS) {
      const v = params.get(name);
      if (v) filters[name] = v;
    }
    state.events.filters = filters;
    for (const [name, id] of FILTER_FIELDS) {
      const v = filters[name] || "";
      $(id).value = name.startsWith("created") ? (v ? isoToLocalInput(v) : "") : v;
    }
    fillRegistrationSelect(filters.registrationId || "");
    if (state.registrations.length === 0) refreshRegistrations();
    loadEvents(null, 1);
  }

  async function loadEvents(cursor, page) {
    const token = ++state.events.token;
    const q = new URLSearchParams(state.events.filters);
    q.set("limit", String(EVENTS_PAGE_SIZE));
    if (cursor) q.set("cursor", cursor);
    $("events-table").setAttribute("aria-busy", "true");
    try {
      const res = await api("GET", `/webhooks/v1/events?${q}`);
      if (token !== state.events.token) return;
      Object.assign(state.events, { cursor, nextCursor: (res && res.nextCursor) || null, page });
      renderEvents((res && res.data) || []);
    } catch (err) {
      if (token === state.events.token) showError(err, "Could not load events");
    } finally {
      if (token === state.events.token) $("events-table").removeAttribute("aria-busy");
    }
  }

  function renderEvents(list) {
    $("events-body").replaceChildren(...list.map((ev) => el("tr", { dataset: { eventId: ev.id }, className: "clickable" },
      el("td", {}, timeEl(ev.createdAt, "—")),
      el("td", {}, routeLink(`#/events/${encodeURIComponent(ev.id)}`, ev.eventName || ev.id, { className: "event-link" })),
      el("td", {}, badge("event", String(ev.status || ""))),
      el("td", { className: "num" }, String(Array.isArray(ev.resources) ? ev.resources.length : 0)),
      el("td", {}, timeEl(ev.lastAttemptedAt, "Not yet")))));
    show($("events-empty"), list.length === 0);
    $("events-next").disabled = !state.events.nextCursor;
    $("events-first").disabled = state.events.page <= 1;
    $("events-page").textContent = `Page ${state.events.page}`;
  }

  function applyFilters(event) {
    event.preventDefault();
    const q = new URLSearchParams();
    for (const [name, id] of FILTER_FIELDS) {
      const raw = $(id).value.trim();
      const v = name.startsWith("created") ? localInputToIso(raw) : raw;
      if (v) q.set(name, v);
    }
    const qs = q.toString();
    navigate(qs ? `#/events?${qs}` : "#/events");
  }

  function onEventRowClick(event) {
    if (event.target.closest("a")) return;      // the link navigates by itself
    const row = event.target.closest("tr[data-event-id]");
    if (row) navigate(`#/events/${encodeURIComponent(row.dataset.eventId)}`);
  }

  // ---------------------------------------------------------------- event detail

  function detailPollWanted() {
    return Boolean(state.key) && state.route.view === "event" && !document.hidden
      && Boolean(state.event) && state.event.status === "Pending";
  }

  function scheduleDetailPoll() {
    clearTimeout(state.detailPollTimer);
    state.detailPollTimer = detailPollWanted() ? setTimeout(async () => {
      state.detailPollTimer = null;
      if (!detailPollWanted()) return;
      await loadEventDetail(state.event.id);
      scheduleDetailPoll();
    }, POLL_MS) : null;
  }

  function stopDetailPolling() { clearTimeout(state.detailPollTimer); state.detailPollTimer = null; }

  function openEventDetail(id) {
    if (!state.event || state.event.id !== id) {
      state.event = null;
      $("event-detail-heading").textContent = "Event";
      $("event-fields").replaceChildren();
      $("event-resources").replaceChildren();
      $("attempts-body").replaceChildren();
    }
    $("event-back").href = routeHref(eventsBackHash());
    loadEventDetail(id).finally(scheduleDetailPoll);
  }

  function eventsBackHash() {
    const qs = new URLSearchParams(state.events.filters).toString();
    return qs ? `#/events?${qs}` : "#/events";
  }

  async function loadEventDetail(id) {
    const token = ++state.detailToken;
    try {
      const [ev, attempts] = await Promise.all([api("GET", eventPath(id)), api("GET", eventPath(id, "/attempts"))]);
      if (token !== state.detailToken || state.route.view !== "event" || state.route.id !== id) return;
      state.event = ev;
      renderEventDetail(ev, (attempts && attempts.data) || []);
    } catch (err) {
      if (token === state.detailToken) showError(err, err.status === 404 ? "Event not found" : "Could not load the event");
    }
  }

  const EVENT_FIELD_LABELS = {
    id: "ID", eventName: "Event name", status: "Status", partnerId: "Partner ID", registrationId: "Registration",
    createdAt: "Created", lastAttemptedAt: "Last attempt",
  };

  function renderEventDetail(ev, attempts) {
    $("event-detail-heading").textContent = `Event ${ev.eventName || ""}`.trim();
    const values = {
      status: badge("event", String(ev.status || "")),
      createdAt: timeEl(ev.createdAt, "—"),
      lastAttemptedAt: timeEl(ev.lastAttemptedAt, "Not yet"),
      registrationId: ev.registrationId ? el("span", {},
        el("code", {}, ev.registrationId), " ",
        routeLink(`#/events?registrationId=${encodeURIComponent(ev.registrationId)}`, "(all its events)")) : "—",
    };
    const keys = Object.keys(EVENT_FIELD_LABELS).concat(Object.keys(ev).filter((k) => !(k in EVENT_FIELD_LABELS) && k !== "resources"));
    const items = [];
    for (const k of keys) {
      if (!(k in ev) && !(k in values)) continue;
      let v = k in values ? values[k] : ev[k];
      if (!(v instanceof Node)) v = v === null || v === undefined ? "—" : (typeof v === "object" ? JSON.stringify(v) : String(v));
      items.push(el("dt", {}, EVENT_FIELD_LABELS[k] || k), el("dd", { dataset: { field: k } }, v));
    }
    const resources = Array.isArray(ev.resources) ? ev.resources : [];
    items.push(el("dt", {}, "Resources"), el("dd", { dataset: { field: "resourceCount" } }, String(resources.length)));
    $("event-fields").replaceChildren(...items);
    $("event-resources").replaceChildren(...(resources.length ? resources.map((r) => el("li", {}, el("code", {}, r)))
      : [el("li", { className: "muted" }, "No resources (for example a test event).")]));
    const sorted = attempts.slice().sort((a, b) => (a.attemptNumber || 0) - (b.attemptNumber || 0));
    $("attempts-body").replaceChildren(...sorted.map((a) => el("tr", { dataset: { attemptNumber: String(a.attemptNumber) } },
      el("td", { className: "num" }, String(a.attemptNumber ?? "")),
      el("td", {}, timeEl(a.attemptedAt, "—")),
      el("td", { className: "num" }, a.durationMs != null ? `${a.durationMs} ms` : "—"),
      el("td", { className: "num" }, a.responseStatus != null ? String(a.responseStatus) : "none"),
      el("td", {}, a.error || "—"),
      el("td", {}, el("pre", { className: "body-excerpt" }, a.responseBody || "")))));
    show($("attempts-empty"), sorted.length === 0);
    show($("event-live"), ev.status === "Pending");
  }

  async function resendEvent() {
    const ev = state.event;
    if (!ev) return;
    clearAlert();
    const button = $("event-resend");
    button.disabled = true;
    try {
      await api("POST", eventPath(ev.id, "/resend"), {});
      announce("Event queued for redelivery.");
      stopDetailPolling();
      await loadEventDetail(ev.id);
      scheduleDetailPoll();
    } catch (err) {
      showError(err, "Could not resend the event");
    } finally {
      button.disabled = false;
    }
  }

  // ---------------------------------------------------------------- wiring

  // ---------------------------------------------------------------- registration stats

  const STATS_POLL_MS = 10000;
  const PERIODS = ["1h", "24h", "7d"];
  const PERIOD_WORDS = { "1h": "hour", "24h": "24 hours", "7d": "7 days" };
  const STATUS_HINTS = {
    Suspended: "Deliveries stopped. Fix the endpoint, then Restart it from the list.",
    Restarting: "One probe delivery decides whether it becomes Active.",
    Paused: "Paused by you: events wait in the queue.",
  };

  function statsPollWanted() { return Boolean(state.key) && state.route.view === "registration" && !document.hidden; }

  function scheduleStatsPoll() {
    clearTimeout(state.statsPollTimer);
    state.statsPollTimer = statsPollWanted() ? setTimeout(async () => {
      state.statsPollTimer = null;
      if (!statsPollWanted()) return;
      await loadStats();
      scheduleStatsPoll();
    }, STATS_POLL_MS) : null;
  }

  function stopStatsPolling() { clearTimeout(state.statsPollTimer); state.statsPollTimer = null; }

  function openStats(id, period) {
    const changed = state.stats.id !== id;
    state.stats.id = id;
    state.stats.period = PERIODS.includes(period) ? period : "24h";
    for (const button of document.querySelectorAll(".period-switch [data-period]")) {
      button.setAttribute("aria-pressed", String(button.dataset.period === state.stats.period));
    }
    if (changed) { $("stats-summary").replaceChildren(); $("stats-chart").replaceChildren(); $("stats-url").textContent = ""; }
    loadStats().finally(scheduleStatsPoll);
  }

  async function loadStats() {
    const { id, period } = state.stats;
    const token = ++state.stats.token;
    try {
      const [reg, stats] = await Promise.all([
        api("GET", regPath(id)),
        api("GET", regPath(id, `/stats?period=${period}`)),
      ]);
      if (token !== state.stats.token) return;   // a newer request (period switch) won
      renderStats(reg, stats);
    } catch (err) {
      if (token === state.stats.token) showError(err, "Could not load the registration's stats");
    }
  }

  function breakerText(breaker) {
    if (!breaker || breaker.state === "closed") return "closed (not holding deliveries back)";
    if (breaker.state === "half-open") return "half-open: one probe attempt is in flight";
    return breaker.nextProbeAt ? `open: held back until ${formatTime(breaker.nextProbeAt)}` : "open: deliveries held back";
  }

  function statItem(label, ...value) {
    return el("div", { className: "stat" }, el("dt", {}, label), el("dd", {}, ...value));
  }

  function renderStats(reg, stats) {
    $("stats-heading").textContent = reg.description ? `Delivery health: ${reg.description}` : "Delivery health";
    $("stats-url").textContent = reg.url || "";
    const a = stats.attempts;
    const total = a.success + a.failure;
    const rate = stats.successRate === null ? "–" : `${(stats.successRate * 100).toFixed(stats.successRate === 1 ? 0 : 1)} %`;
    const lat = stats.latencyMs;
    const queue = stats.queue;
    const now = Date.now();
    $("stats-summary").replaceChildren(
      statItem("Status", badge("status", String(reg.status || "")),
        STATUS_HINTS[reg.status] ? el("span", { className: "hint block" }, STATUS_HINTS[reg.status]) : null),
      statItem("Circuit breaker", el("span", { className: `breaker-text breaker-text-${(reg.breaker && reg.breaker.state) || "closed"}` }, breakerText(reg.breaker))),
      statItem(`Attempts (last ${PERIOD_WORDS[stats.period]})`,
        el("span", { className: "count-success" }, `${a.success} succeeded`), " · ",
        el("span", { className: a.failure ? "count-failure" : "" }, `${a.failure} failed`)),
      statItem("Success rate", el("span", { className: "big" }, rate)),
      statItem("Latency p50 / p95 / p99", lat ? `${BrokerStats.formatMs(lat.p50)} / ${BrokerStats.formatMs(lat.p95)} / ${BrokerStats.formatMs(lat.p99)}` : "–"),
      statItem("Queue", el("span", { className: "big" }, `${queue.pending} pending`),
        queue.oldestPendingAt
          ? el("span", { className: "hint block" }, "oldest waiting ", el("time", { dateTime: queue.oldestPendingAt, title: formatTime(queue.oldestPendingAt) }, BrokerStats.age(queue.oldestPendingAt, now)))
          : el("span", { className: "hint block" }, "nothing waiting")),
    );
    $("stats-summary").dataset.total = String(total);
    $("stats-chart").replaceChildren(BrokerStats.chart(stats));
  }

  function onPeriodSwitch(event) {
    const button = event.target.closest("button[data-period]");
    if (!button || !state.stats.id) return;
    navigate(`#/registrations/${encodeURIComponent(state.stats.id)}?period=${button.dataset.period}`);
  }

  function onVisibilityChange() {
    if (document.hidden) { stopRegPolling(); stopDetailPolling(); stopStatsPolling(); return; }
    if (!state.key) return;
    if (state.route.view === "registrations") refreshRegistrations().finally(scheduleRegPoll);
    else if (state.route.view === "event" && state.event) loadEventDetail(state.event.id).finally(scheduleDetailPoll);
    else if (state.route.view === "registration") loadStats().finally(scheduleStatsPoll);
  }

  function init() {
    for (const link of document.querySelectorAll("a[data-route]")) link.href = routeHref(link.dataset.route);
    const skip = document.querySelector("[data-skip-link]");
    skip.href = routeHref("#main");
    skip.addEventListener("click", (e) => { e.preventDefault(); $("main").focus(); });

    $("signin-form").addEventListener("submit", signIn);
    $("sign-out").addEventListener("click", () => signOut());
    $("registrations-body").addEventListener("click", onRegistrationAction);
    $("create-policy").replaceWith(policyFields("create"));
    $("edit-policy").replaceWith(policyFields("edit"));
    fillPolicyFields("create", null);
    $("create-form").addEventListener("submit", createRegistration);
    $("create-event-type-list").addEventListener("change", syncEventTypeText);
    $("create-event-types").addEventListener("input", syncEventTypeBoxes);
    $("secret-copy").addEventListener("click", copySecret);
    $("secret-dismiss").addEventListener("click", () => {
      show($("secret-panel"), false);
      $("secret-value").value = "";
      $("registrations-heading").focus();
    });
    $("test-result-dismiss").addEventListener("click", () => { show($("test-result"), false); $("registrations-heading").focus(); });
    $("replay-form").addEventListener("submit", submitReplay);
    $("replay-dismiss").addEventListener("click", () => { show($("replay-panel"), false); $("registrations-heading").focus(); });
    $("events-filter").addEventListener("submit", applyFilters);
    $("filter-clear").addEventListener("click", () => navigate("#/events"));
    $("events-next").addEventListener("click", () => {
      if (state.events.nextCursor) loadEvents(state.events.nextCursor, state.events.page + 1);
    });
    $("events-first").addEventListener("click", () => loadEvents(null, 1));
    $("events-body").addEventListener("click", onEventRowClick);
    $("event-resend").addEventListener("click", resendEvent);
    document.querySelector(".period-switch").addEventListener("click", onPeriodSwitch);
    window.addEventListener("hashchange", () => {
      clearAlert();
      const token = takeLinkToken();   // a link opened in a tab already on the portal
      if (token) signInWithLink(token);
      else route(true);
    });
    document.addEventListener("visibilitychange", onVisibilityChange);

    const linkToken = takeLinkToken();
    const stored = sessionStorage.getItem(STORAGE_KEY);
    if (linkToken) {
      signInWithLink(linkToken);
    } else if (stored) {
      resumeSession(stored);      // a revoked key answers 401 and api() signs out
    } else {
      showShell(false);
    }
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", init);
  else init();
})();
