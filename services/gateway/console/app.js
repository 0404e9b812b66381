// Huitou operator console: a small single-page app over the gateway's /api/v1.
// The API key lives in sessionStorage (this tab only); every call sends it as a Bearer token.
// All data is put on the page with textContent, never as HTML.
"use strict";

(function () {
  const DICT = window.HUITOU_I18N;
  const Charts = window.HuitouCharts;
  const KEY_STORE = "huitou.key";
  const LANG_STORE = "huitou.lang";
  const view = document.getElementById("view");
  let lang = localStorage.getItem(LANG_STORE) || (navigator.language && navigator.language.startsWith("zh") ? "zh-CN" : "en");
  let me = null;

  // ---------- words ----------
  function t(key, vars) {
    const text = (DICT[lang] && DICT[lang][key]) || DICT.en[key] || key;
    return text.replace(/\{(\w+)\}/g, (_, name) => (vars && vars[name] !== undefined ? String(vars[name]) : ""));
  }

  function applyStaticText() {
    document.documentElement.lang = lang;
    document.querySelectorAll("[data-i18n]").forEach((node) => { node.textContent = t(node.dataset.i18n); });
    document.title = t("app.title");
    if (me) document.getElementById("who").textContent = t("session.as", me);
  }

  // ---------- DOM ----------
  function h(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [name, value] of Object.entries(attrs || {})) {
      if (value === undefined || value === null || value === false) continue;
      if (name === "on") for (const [event, handler] of Object.entries(value)) node.addEventListener(event, handler);
      else if (name === "text") node.textContent = value;
      else if (name === "testid") node.dataset.testid = value;
      else if (name in node && name !== "list" && typeof value !== "string") node[name] = value;
      else node.setAttribute(name, value === true ? "" : String(value));
    }
    for (const child of children.flat()) {
      if (child === undefined || child === null || child === false) continue;
      node.appendChild(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return node;
  }

  function card(title, ...children) {
    return h("section", { class: "card" }, title ? h("h2", { text: title }) : null, ...children);
  }

  function notify(message, isError) {
    const box = document.getElementById("notice");
    box.textContent = message;
    box.className = isError ? "error" : "";
    box.hidden = false;
    clearTimeout(notify.timer);
    notify.timer = setTimeout(() => { box.hidden = true; }, isError ? 8000 : 4000);
  }

  function describe(error) {
    if (!(error instanceof ApiError)) return String(error && error.message ? error.message : error);
    return error.problems && error.problems.length ? `${error.message}: ${error.problems.join("; ")}` : error.message;
  }

  function fail(error) { notify(describe(error), true); }

  // ---------- formatting ----------
  function when(value) {
    if (!value) return "—";
    const date = new Date(value);
    return isNaN(date) ? String(value) : date.toLocaleString(lang, { dateStyle: "medium", timeStyle: "short" });
  }
  function day(value) {
    if (!value) return "—";
    const date = new Date(value);
    return isNaN(date) ? String(value) : date.toLocaleDateString(lang, { dateStyle: "medium" });
  }
  function money(value) {
    if (value === null || value === undefined || value === "") return "—";
    const number = Number(value);
    return isNaN(number) ? String(value) : number.toLocaleString(lang, { minimumFractionDigits: 2, maximumFractionDigits: 2 });
  }
  function pct(value) {
    if (value === null || value === undefined) return "—";
    return `${(Number(value) * 100).toFixed(1)}%`;
  }
  function show(value) {
    if (value === null || value === undefined || value === "") return "—";
    if (typeof value === "boolean") return t(value ? "common.yes" : "common.no");
    if (typeof value === "number") return Number.isInteger(value) ? String(value) : value.toFixed(3);
    if (typeof value === "object") return JSON.stringify(value);
    return String(value);
  }

  // ---------- API ----------
  class ApiError extends Error {
    constructor(status, body) {
      super((body && (body.error || body.detail)) || `HTTP ${status}`);
      this.status = status;
      this.problems = body && body.problems;
    }
  }

  async function api(method, path, options) {
    const opts = options || {};
    const url = new URL("/api/v1" + path, location.origin);
    for (const [name, value] of Object.entries(opts.query || {})) {
      if (value === undefined || value === null || value === "") continue;
      for (const one of Array.isArray(value) ? value : [value]) url.searchParams.append(name, one);
    }
    const headers = { Authorization: `Bearer ${opts.key || sessionStorage.getItem(KEY_STORE)}` };
    if (opts.body !== undefined) headers["Content-Type"] = "application/json";
    const response = await fetch(url, { method, headers, body: opts.body === undefined ? undefined : JSON.stringify(opts.body) });
    const text = await response.text();
    let body = null;
    try { body = text ? JSON.parse(text) : null; } catch (_) { body = { error: text }; }
    if (response.status === 401 && !opts.key) {
      logout(t("login.expired"));
      throw new ApiError(401, body);
    }
    if (!response.ok) throw new ApiError(response.status, body);
    return body;
  }

  // ---------- session ----------
  async function login(key) {
    me = await api("GET", "/me", { key });
    sessionStorage.setItem(KEY_STORE, key);
    sessionStorage.setItem("huitou.me", JSON.stringify(me));
    showSession();
  }

  function logout(message) {
    sessionStorage.removeItem(KEY_STORE);
    sessionStorage.removeItem("huitou.me");
    me = null;
    showSession();
    location.hash = "#/login";
    if (message) notify(message, true);
  }

  function showSession() {
    const nav = document.getElementById("nav");
    nav.hidden = !me;
    document.getElementById("logout").hidden = !me;
    document.getElementById("who").textContent = me ? t("session.as", me) : "";
    nav.querySelectorAll("[data-role=admin]").forEach((link) => { link.hidden = !me || me.role !== "admin"; });
  }

  function canWrite() { return me && (me.role === "operator" || me.role === "admin"); }

  // ---------- views ----------
  function loginView() {
    const key = h("input", { type: "password", name: "key", autocomplete: "off", required: true, testid: "login-key" });
    const problem = h("p", { class: "error-text", testid: "login-error" });
    const form = h("form", {
      class: "card login stack",
      on: {
        submit: async (event) => {
          event.preventDefault();
          problem.textContent = "";
          try {
            await login(key.value.trim());
            location.hash = "#/dashboard";
          } catch (error) {
            problem.textContent = `${t("login.failed")}: ${describe(error)}`;
          }
        },
      },
    },
    h("h1", { text: t("login.title") }),
    h("p", { class: "muted", text: t("login.intro") }),
    h("label", {}, t("login.key"), key),
    h("button", { type: "submit", testid: "login-submit", text: t("login.submit") }),
    problem);
    view.replaceChildren(form);
    key.focus();
  }

  // ----- dashboard -----
  function buckets(report) {
    return ((report && report.buckets) || []).map((b) => ({ label: b.value === null ? "—" : String(b.value), value: Number(b.customers) || 0 }));
  }

  function chartCard(title, testid, load, draw) {
    const body = h("div", { class: "muted", text: t("common.loading") });
    const section = h("section", { class: "card", testid }, h("h2", { text: title }), body);
    load().then((data) => {
      body.replaceChildren(draw(data));
      section.dataset.loaded = "true";
    }).catch((error) => {
      body.textContent = t("common.unavailable", { error: describe(error) });
      section.dataset.loaded = "error";
    });
    return section;
  }

  function dashboardView() {
    const none = t("common.none");
    const zone = Intl.DateTimeFormat().resolvedOptions().timeZone || "UTC";
    view.replaceChildren(h("h1", { text: t("dashboard.title") }), h("div", { class: "grid" },
      chartCard(t("dashboard.tiers"), "chart-tiers", () => api("GET", "/reports/tiers"),
        (data) => Charts.bars(buckets(data), { label: t("dashboard.tiers"), emptyText: none })),
      chartCard(t("dashboard.stages"), "chart-stages", () => api("GET", "/reports/stages"),
        (data) => Charts.funnel(buckets(data).filter((b) => b.label !== "—"), { label: t("dashboard.stages"), emptyText: none })),
      chartCard(t("dashboard.churn"), "chart-churn", () => api("GET", "/reports/churn-bands"),
        (data) => Charts.bars(buckets(data), { label: t("dashboard.churn"), emptyText: none })),
      chartCard(t("dashboard.touchesPerDay"), "chart-touches-per-day",
        () => api("GET", "/reports/touches-per-day", { query: { days: 14, until: isoDay(3), timezone: zone } }),
        (data) => Charts.line((data || []).map((d) => ({ label: String(d.day).slice(5), value: d.total })), { label: t("dashboard.touchesPerDay"), emptyText: none })),
      chartCard(t("dashboard.lift"), "chart-lift", () => api("GET", "/reports/lift"), (data) => liftChart(data || [], none)),
      chartCard(t("dashboard.touchesByPlan"), "chart-touches-by-plan", () => api("GET", "/reports/touches"),
        (data) => Charts.stacked(touchesByPlan(data || []), { label: t("dashboard.touchesByPlan"), emptyText: none }))));
  }

  // Lift needs conversions on both sides; the table shows every plan's numbers either way.
  function liftChart(plans, none) {
    const measured = plans.filter((p) => p.lift !== null && p.lift !== undefined);
    const chart = Charts.diverging(measured.map((p) => ({
      label: p.plan,
      value: Number(p.lift),
      note: `${t("dashboard.conversion")} ${pct(p.treated.conversion_rate)}, ${t("dashboard.holdout")} ${pct(p.holdout.conversion_rate)}`,
    })), { label: t("dashboard.lift"), emptyText: none, format: pct });
    if (!plans.length) return chart;
    const group = (g) => `${g.conversions}/${g.touches} (${pct(g.conversion_rate)})`;
    const head = h("tr", {}, [t("touches.plan"), t("dashboard.treated"), t("dashboard.holdout"), t("dashboard.liftColumn")].map((text) => h("th", { text })));
    const rows = plans.map((p) => h("tr", {}, h("td", { text: p.plan }), h("td", { class: "num", text: group(p.treated) }),
      h("td", { class: "num", text: group(p.holdout) }), h("td", { class: "num", text: pct(p.lift) })));
    return h("div", {}, chart, h("table", { class: "small" }, h("thead", {}, head), h("tbody", {}, rows)));
  }

  // A local calendar day `offset` days from today, as YYYY-MM-DD (the window ends a few days
  // ahead so touches scheduled for the coming days show as well).
  function isoDay(offset) {
    const date = new Date(Date.now() + offset * 86400000);
    return `${date.getFullYear()}-${String(date.getMonth() + 1).padStart(2, "0")}-${String(date.getDate()).padStart(2, "0")}`;
  }

  function touchesByPlan(rows) {
    const plans = new Map();
    for (const row of rows) {
      const parts = plans.get(row.plan) || {};
      parts[row.status] = (parts[row.status] || 0) + Number(row.count || 0);
      plans.set(row.plan, parts);
    }
    return [...plans.entries()].map(([label, parts]) => ({ label, parts }));
  }

  // ----- customers -----
  const CHOICES = {
    value_tier: ["A", "B", "C", "D"],
    grade: ["vip", "gold", "silver", "regular"],
    stage: ["prospect", "new", "active", "won_back", "at_risk", "lapsed"],
    churn_band: ["low", "medium", "high"],
  };
  const FILTERS = [
    ["value_tier", "customers.tier", "choice"], ["grade", "customers.grade", "choice"], ["stage", "customers.stage", "choice"],
    ["churn_band", "customers.churnBand", "choice"], ["tag", "customers.tag", "text"],
    ["clv_min", "customers.clvMin", "number"], ["clv_max", "customers.clvMax", "number"],
    ["last_purchase_from", "customers.lastPurchaseFrom", "date"], ["last_purchase_to", "customers.lastPurchaseTo", "date"],
  ];
  const SORTS = ["customer_id", "-clv_365", "-revenue", "-order_count", "-last_purchase_at", "last_purchase_at", "-p_alive", "-loyalty_index"];
  const PAGE_SIZE = 25;

  function hashQuery() {
    const index = location.hash.indexOf("?");
    return new URLSearchParams(index >= 0 ? location.hash.slice(index + 1) : "");
  }

  async function customersView() {
    const params = hashQuery();
    const inputs = {};
    const fields = FILTERS.map(([name, key, type]) => {
      const input = type === "choice"
        ? h("select", { name, testid: `filter-${name}` }, h("option", { value: "", text: t("common.any") }),
          CHOICES[name].map((value) => h("option", { value, selected: params.get(name) === value, text: value })))
        : h("input", { name, type, value: params.get(name) || "", testid: `filter-${name}`, step: type === "number" ? "any" : undefined });
      inputs[name] = input;
      return h("label", {}, t(key), input);
    });
    const sort = h("select", { name: "sort", testid: "filter-sort" },
      SORTS.map((value) => h("option", { value, selected: (params.get("sort") || "customer_id") === value, text: value })));
    const form = h("form", {
      class: "filters card",
      testid: "customer-search",
      on: {
        submit: (event) => {
          event.preventDefault();
          const next = new URLSearchParams();
          for (const [name, input] of Object.entries(inputs)) if (input.value) next.set(name, input.value);
          if (sort.value && sort.value !== "customer_id") next.set("sort", sort.value);
          location.hash = `#/customers?${next}`;
        },
      },
    }, fields, h("label", {}, t("customers.sort"), sort), h("div", { class: "row" },
      h("button", { type: "submit", testid: "search-submit", text: t("common.search") }),
      h("button", { type: "button", class: "secondary", text: t("common.reset"), on: { click: () => { location.hash = "#/customers"; } } })));

    const openId = h("input", { name: "customer_id", placeholder: "cust-42", testid: "open-customer-id" });
    const opener = h("form", {
      class: "row card",
      on: { submit: (event) => { event.preventDefault(); if (openId.value.trim()) location.hash = `#/customers/${encodeURIComponent(openId.value.trim())}`; } },
    }, h("label", {}, t("customers.open"), openId), h("button", { type: "submit", class: "secondary", testid: "open-customer", text: "→" }));

    const results = h("div", { testid: "customer-results", text: t("common.loading") });
    view.replaceChildren(h("h1", { text: t("customers.title") }), h("div", { class: "stack" }, form, opener, results));

    const query = {};
    for (const [name] of FILTERS) if (params.get(name)) query[name] = params.get(name);
    if (query.last_purchase_from) query.last_purchase_from = `${query.last_purchase_from}T00:00:00Z`;
    if (query.last_purchase_to) query.last_purchase_to = `${query.last_purchase_to}T23:59:59Z`;
    if (params.get("sort")) query.sort = params.get("sort");
    const offset = Number(params.get("offset") || 0);
    query.limit = PAGE_SIZE;
    query.offset = offset;
    try {
      const data = await api("GET", "/customers", { query });
      results.replaceChildren(customerTable(data.items || [], data.total, offset, params));
    } catch (error) {
      results.replaceChildren(h("p", { class: "error-text", text: t("common.unavailable", { error: describe(error) }) }));
    }
  }

  function customerTable(items, total, offset, params) {
    if (!items.length) return card(null, h("p", { class: "muted", text: t("common.none") }));
    const head = h("tr", {}, ["customers.id", "customers.name", "customers.tier", "customers.grade", "customers.stage",
      "customers.churnBand", "customers.clv", "customers.orders", "customers.revenue", "customers.lastPurchase"].map((key) => h("th", { text: t(key) })));
    const rows = items.map((c) => h("tr", {
      class: "clickable",
      testid: `customer-row-${c.customer_id}`,
      on: { click: () => { location.hash = `#/customers/${encodeURIComponent(c.customer_id)}`; } },
    },
    h("td", {}, h("a", { href: `#/customers/${encodeURIComponent(c.customer_id)}`, text: c.customer_id })),
    h("td", { text: show(c.name) }), h("td", { text: show(c.value_tier) }), h("td", { text: show(c.grade) }),
    h("td", { text: show(c.stage) }), h("td", { text: show(c.churn_band) }), h("td", { class: "num", text: money(c.clv_365) }),
    h("td", { class: "num", text: show(c.order_count) }), h("td", { class: "num", text: money(c.revenue) }), h("td", { text: day(c.last_purchase_at) })));
    const pager = h("div", { class: "row" },
      h("button", { class: "secondary", disabled: offset <= 0, text: t("common.previous"), on: { click: () => page(params, Math.max(0, offset - PAGE_SIZE)) } }),
      h("span", { class: "muted", testid: "customer-count", text: t("common.page", { from: offset + 1, to: offset + items.length, total }) }),
      h("button", { class: "secondary", disabled: offset + items.length >= total, text: t("common.next"), on: { click: () => page(params, offset + PAGE_SIZE) } }));
    return card(null, h("table", {}, h("thead", {}, head), h("tbody", {}, rows)), pager);
  }

  function page(params, offset) {
    const next = new URLSearchParams(params);
    next.set("offset", String(offset));
    location.hash = `#/customers?${next}`;
  }

  // ----- the customer file -----
  const SCORE_FIELDS = ["value_tier", "computed_tier", "grade", "stage", "churn_band", "rfm", "p_alive", "p_no_purchase_90d",
    "expected_purchases_365d", "clv_365", "expected_next_order_at", "loyalty_quadrant", "relationship_type", "prospect_grade", "satisfaction_level"];
  const PURCHASE_FIELDS = ["order_count", "revenue", "refunded", "net_revenue", "average_order_value", "first_purchase_at", "last_purchase_at",
    "typical_days_between_purchases", "preferred_category"];

  function facts(object, names, testid) {
    const list = h("dl", { class: "facts", testid });
    for (const name of names) {
      if (!object || object[name] === undefined) continue;
      const value = object[name];
      const text = /_at$/.test(name) ? when(value) : /revenue|refunded|value$|clv|spend/.test(name) ? money(value) : show(value);
      list.append(h("dt", { text: name.replace(/_/g, " ") }), h("dd", { text }));
    }
    return list;
  }

  async function customerFileView(id) {
    const path = `/customers/${encodeURIComponent(id)}`;
    view.replaceChildren(h("p", { class: "muted", text: t("common.loading") }));
    let file;
    try {
      file = await api("GET", path);
    } catch (error) {
      view.replaceChildren(h("a", { href: "#/customers", text: t("file.back") }),
        card(t("file.title"), h("p", { class: "error-text", testid: "file-error", text: describe(error) })));
      return;
    }
    const scores = file.scores || {};
    const loyalty = scores.loyalty || {};
    const scoreList = facts(scores, SCORE_FIELDS, "file-scores");
    if (loyalty.index !== undefined && loyalty.index !== null) {
      scoreList.append(h("dt", { text: "loyalty" }), h("dd", { text: `${show(loyalty.index)} (${["behavioural", "emotional", "intentional"].map((k) => `${k} ${show(loyalty[k])}`).join(" · ")})` }));
    }
    const timeline = h("ol", { class: "timeline", testid: "file-timeline" }, h("li", { class: "muted", text: t("common.loading") }));
    const touchesBox = h("div", { testid: "file-touches", text: t("common.loading") });
    const title = h("h1", { testid: "file-title" }, file.name || file.customer_id, " ",
      h("span", { class: "muted small", text: file.customer_id }), " ",
      scores.value_tier ? h("span", { class: "badge", testid: "file-tier", text: `${t("customers.tier")} ${scores.value_tier}` }) : null, " ",
      scores.stage ? h("span", { class: "badge", text: scores.stage }) : null);
    const consents = Object.fromEntries(Object.entries(file.consents || {}).map(([k, v]) => [k, v && typeof v === "object" ? v.value : v]));
    view.replaceChildren(
      h("a", { href: "#/customers", text: t("file.back") }), title,
      h("div", { class: "grid-2" },
        h("div", { class: "stack" },
          card(t("file.profile"), facts(file.profile || {}, Object.keys(file.profile || {}), "file-profile")),
          card(t("file.scores"), scoreList),
          card(t("file.purchases"), facts(file.purchases || {}, PURCHASE_FIELDS, "file-purchases")),
          tagsCard(file, path), notesCard(file, path), overrideCard(file, path), contactsCard(file, path),
          Object.keys(consents).length ? card(t("file.consents"), facts(consents, Object.keys(consents))) : null,
          me && me.role === "admin" ? privacyCard(file) : null),
        h("div", { class: "stack" }, card(t("file.timeline"), timeline), card(t("file.touches"), touchesBox))));
    let touches = [];
    try {
      touches = await api("GET", `${path}/touches`);
      touchesBox.replaceChildren(touchTable(touches, false));
    } catch (error) {
      touchesBox.textContent = t("common.unavailable", { error: describe(error) });
    }
    drawTimeline(timeline, file, touches);
  }

  function tagsCard(file, path) {
    const input = h("input", { name: "tag", placeholder: t("file.newTag"), testid: "new-tag" });
    return card(t("file.tags"),
      h("div", { class: "row", testid: "file-tags" }, (file.tags || []).map((tag) => h("span", { class: "chip" }, tag,
        canWrite() ? h("button", { type: "button", title: t("common.remove"), text: "×", on: { click: () => write("DELETE", `${path}/tags/${encodeURIComponent(tag)}`) } }) : null))),
      canWrite() ? h("form", { class: "row", on: { submit: (e) => { e.preventDefault(); if (input.value.trim()) write("POST", `${path}/tags`, { tags: [input.value.trim()] }); } } },
        input, h("button", { type: "submit", class: "secondary", testid: "add-tag", text: t("common.add") })) : null);
  }

  function notesCard(file, path) {
    const input = h("textarea", { name: "note", placeholder: t("file.newNote"), testid: "new-note", rows: 3 });
    return card(t("file.notes"),
      h("ul", { class: "list", testid: "file-notes" }, (file.notes || []).map((note) => h("li", {},
        h("div", { text: note.text }),
        h("div", { class: "muted small" }, `${show(note.author)} · ${when(note.created_at)} `,
          canWrite() ? h("button", { type: "button", class: "link", text: t("common.remove"), on: { click: () => write("DELETE", `${path}/notes/${note.id}`) } }) : null)))),
      canWrite() ? h("form", { class: "stack", on: { submit: (e) => { e.preventDefault(); if (input.value.trim()) write("POST", `${path}/notes`, { text: input.value.trim() }); } } },
        input, h("button", { type: "submit", class: "secondary", testid: "add-note", text: t("common.add") })) : null);
  }

  function overrideCard(file, path) {
    const override = (file.scores || {}).tier_override;
    const tier = h("select", { name: "tier", testid: "override-tier" }, CHOICES.value_tier.map((value) => h("option", { value, text: value })));
    const reason = h("input", { name: "reason", placeholder: t("common.reason"), testid: "override-reason", minlength: 3, required: true });
    const release = h("input", { name: "release-reason", placeholder: t("common.reason"), minlength: 3, required: true });
    return card(t("file.tierOverride"),
      override ? h("p", { testid: "override-current", text: t("file.overridden", { tier: override.tier, reason: override.reason || "" }) }) : null,
      canWrite() ? h("form", { class: "row", on: { submit: (e) => { e.preventDefault(); write("PUT", `${path}/tier-override`, { tier: tier.value, reason: reason.value }); } } },
        h("label", {}, t("file.overrideTier"), tier), h("label", {}, t("common.reason"), reason),
        h("button", { type: "submit", class: "secondary", testid: "override-submit", text: t("file.override") })) : null,
      canWrite() && override ? h("form", { class: "row", on: { submit: (e) => { e.preventDefault(); write("DELETE", `${path}/tier-override`, undefined, { reason: release.value }); } } },
        h("label", {}, t("common.reason"), release), h("button", { type: "submit", class: "danger", text: t("file.release") })) : null);
  }

  function contactsCard(file, path) {
    const fields = ["name", "role", "email", "phone"].map((name) => h("input", { name, placeholder: t(`file.contact${name[0].toUpperCase()}${name.slice(1)}`), required: name === "name" }));
    return card(t("file.contacts"),
      h("ul", { class: "list", testid: "file-contacts" }, (file.contacts || []).map((c) => h("li", {},
        [c.name, c.role, c.email, c.phone].filter(Boolean).join(" · "), c.is_primary ? " ★ " : " ",
        canWrite() ? h("button", { type: "button", class: "link", text: t("common.remove"), on: { click: () => write("DELETE", `${path}/contacts/${encodeURIComponent(c.contact_id)}`) } }) : null))),
      canWrite() ? h("form", { class: "row", on: { submit: (e) => {
        e.preventDefault();
        write("POST", `${path}/contacts`, Object.fromEntries(fields.filter((f) => f.value.trim()).map((f) => [f.name, f.value.trim()])));
      } } }, fields, h("button", { type: "submit", class: "secondary", text: t("common.add") })) : null);
  }

  function privacyCard(file) {
    const path = `/customers/${encodeURIComponent(file.customer_id)}`;
    return card(null, h("div", { class: "row" },
      h("button", { type: "button", class: "secondary", testid: "export", text: t("file.export"), on: { click: async () => {
        try {
          const data = await api("GET", `${path}/export`);
          const url = URL.createObjectURL(new Blob([JSON.stringify(data, null, 2)], { type: "application/json" }));
          h("a", { href: url, download: `${file.customer_id}-export.json` }).click();
          setTimeout(() => URL.revokeObjectURL(url), 10000);
        } catch (error) { fail(error); }
      } } }),
      h("button", { type: "button", class: "danger", testid: "erase", text: t("file.erase"), on: { click: async () => {
        if (!confirm(t("file.eraseConfirm", { id: file.customer_id }))) return;
        try {
          const report = await api("DELETE", path);
          notify(t("file.erased", { services: Object.entries(report.services).map(([s, r]) => `${s}: ${r.status}`).join(", ") }));
          location.hash = "#/customers";
        } catch (error) { fail(error); }
      } } })));
  }

  async function write(method, path, body, query) {
    try {
      await api(method, path, { body, query });
      notify(t("common.saved"));
      await render();
    } catch (error) {
      fail(error);
    }
  }

  // The timeline is the file's own record: orders, complaints, notes, every score change with
  // its reason (tier, grade, stage…), and the care touches outreach planned.
  function drawTimeline(list, file, touches) {
    const entries = [];
    for (const o of file.recent_orders || []) {
      entries.push({ kind: "order", at: o.occurred_at, text: `${o.order_id} · ${money(o.amount)} ${o.currency}${Number(o.refunded) ? ` (${t("timeline.refund")} ${money(o.refunded)})` : ""}` });
    }
    for (const change of file.history || []) {
      const kind = change.field === "value_tier" ? "tier" : change.field === "grade" ? "grade" : change.field === "stage" ? "stage" : "other";
      entries.push({ kind, at: change.as_of, label: kind === "other" ? change.field.replace(/_/g, " ") : null, text: `${show(change.before)} → ${show(change.after)} · ${change.reason}` });
    }
    for (const c of file.complaints || []) entries.push({ kind: "interaction", at: c.opened_at, text: `${c.complaint_id} · ${c.status}${c.text ? " · " + c.text : ""}` });
    for (const n of file.notes || []) entries.push({ kind: "note", at: n.created_at, text: `${n.text} (${show(n.author)})` });
    for (const touch of touches || []) entries.push({ kind: "touch", at: touch.due_at, text: `${touch.plan} · ${touch.status}${touch.channel ? " · " + touch.channel : ""}` });
    entries.sort((a, b) => String(b.at || "").localeCompare(String(a.at || "")));
    if (!entries.length) { list.replaceChildren(h("li", { class: "muted", text: t("common.none") })); return; }
    list.replaceChildren(...entries.map((entry) => h("li", { class: `kind-${entry.kind}`, testid: "timeline-entry" },
      h("div", { class: "when", text: when(entry.at) }),
      h("strong", { text: entry.label || t(`timeline.${entry.kind}`) }), " ",
      h("span", { text: entry.text }))));
  }

  // ----- touches -----
  function touchTable(items, actions) {
    if (!items.length) return h("p", { class: "muted", text: t("common.none") });
    const head = h("tr", {}, ["touches.customer", "touches.plan", "touches.channel", "touches.status", "touches.due", "touches.reason"].map((key) => h("th", { text: t(key) })), actions ? h("th") : null);
    const rows = items.map((touch) => h("tr", { testid: `touch-${touch.touch_id}` },
      h("td", {}, h("a", { href: `#/customers/${encodeURIComponent(touch.customer_id)}`, text: touch.customer_id })),
      h("td", { text: touch.plan }), h("td", { text: show(touch.channel) }),
      h("td", {}, h("span", { class: touch.status === "pending_approval" ? "badge warn" : "badge", text: touch.status })),
      h("td", { text: when(touch.due_at) }),
      h("td", { class: "small", text: [touch.reason, touch.offer ? `${touch.offer.code} (${money(touch.offer.value)})` : null].filter(Boolean).join(" · ") || "—" }),
      actions ? h("td", {}, h("div", { class: "row" },
        h("button", { type: "button", testid: `approve-${touch.touch_id}`, text: t("touches.approve"), on: { click: () => decide(touch, "approve") } }),
        h("button", { type: "button", class: "danger", testid: `cancel-${touch.touch_id}`, text: t("touches.cancel"), on: { click: () => decide(touch, "cancel") } }))) : null));
    return h("table", {}, h("thead", {}, head), h("tbody", {}, rows));
  }

  async function decide(touch, verb) {
    try {
      await api("POST", `/touches/${encodeURIComponent(touch.touch_id)}/${verb}`, verb === "cancel" ? { body: { reason: "cancelled in the console" } } : {});
      notify(t(verb === "approve" ? "touches.approved" : "touches.cancelled"));
      await render();
    } catch (error) {
      fail(error);
    }
  }

  async function touchesView() {
    const pending = h("div", { testid: "pending-touches", text: t("common.loading") });
    const tasks = h("div", { testid: "operator-tasks", text: t("common.loading") });
    const status = hashQuery().get("status") || "";
    const statusFilter = h("select", { testid: "touch-status", on: { change: () => { location.hash = `#/touches?status=${statusFilter.value}`; } } },
      ["", "pending_approval", "scheduled", "sending", "sent", "suppressed", "failed", "cancelled", "converted"].map((value) => h("option", { value, selected: value === status, text: value || t("common.any") })));
    const all = h("div", { testid: "all-touches", text: t("common.loading") });
    view.replaceChildren(h("h1", { text: t("touches.title") }), h("div", { class: "stack" },
      card(t("touches.pending"), pending), card(t("touches.tasks"), tasks),
      card(t("touches.all"), h("label", {}, t("touches.filterStatus"), statusFilter), all)));
    const fill = (box, promise, draw) => promise.then((data) => box.replaceChildren(draw(data))).catch((error) => {
      box.replaceChildren(h("p", { class: "error-text", text: t("common.unavailable", { error: describe(error) }) }));
    });
    await Promise.all([
      fill(pending, api("GET", "/touches", { query: { status: "pending_approval", limit: 100 } }), (data) => touchTable(data.items, canWrite())),
      fill(tasks, api("GET", "/operator-tasks", { query: { status: "open", limit: 100 } }), (data) => taskList(data.items)),
      fill(all, api("GET", "/touches", { query: { status: status || undefined, limit: 50 } }), (data) => touchTable(data.items, false)),
    ]);
  }

  function taskList(items) {
    if (!items.length) return h("p", { class: "muted", text: t("common.none") });
    return h("ul", { class: "list" }, items.map((task) => {
      const resolution = h("input", { placeholder: t("touches.resolution"), required: true });
      return h("li", { testid: `task-${task.task_id}` },
        h("div", {}, h("a", { href: `#/customers/${encodeURIComponent(task.customer_id)}`, text: task.customer_id }), ` · ${task.kind} · ${when(task.resolve_by)}`),
        h("div", { class: "small", text: task.summary }),
        canWrite() ? h("form", { class: "row", on: { submit: async (e) => {
          e.preventDefault();
          try {
            await api("POST", `/operator-tasks/${encodeURIComponent(task.task_id)}/resolve`, { body: { resolution: resolution.value } });
            notify(t("touches.resolved"));
            await render();
          } catch (error) { fail(error); }
        } } }, resolution, h("button", { type: "submit", class: "secondary", text: t("touches.resolve") })) : null);
    }));
  }

  // ----- care plans and templates -----
  const LOCALES = ["zh-CN", "en"];

  async function plansView() {
    const params = hashQuery();
    const planList = h("ul", { class: "list", testid: "plan-list" }, h("li", { class: "muted", text: t("common.loading") }));
    const templateList = h("ul", { class: "list", testid: "template-list" }, h("li", { class: "muted", text: t("common.loading") }));
    const editor = h("div", { class: "stack", testid: "editor" }, card(null, h("p", { class: "muted", text: t("plans.choose") })));
    view.replaceChildren(h("h1", { text: t("plans.title") }), h("div", { class: "grid-2" },
      h("div", { class: "stack" }, card(t("plans.plans"), planList), card(t("plans.templates"), templateList)), editor));
    const [plans, templates] = await Promise.allSettled([api("GET", "/care-plans"), api("GET", "/templates")]);
    fillList(planList, plans, (plan) => `${plan.definition.enabled === false ? t("plans.disabled") : t("plans.enabled")} · v${plan.version} · ${plan.definition.template}`, "plan", params.get("plan"));
    fillList(templateList, templates, (tpl) => `v${tpl.version} · ${Object.keys(tpl.locales || {}).join(" · ")}`, "template", params.get("template"));
    const planRows = plans.status === "fulfilled" ? plans.value : [];
    if (params.get("plan")) await planEditor(editor, params.get("plan"));
    else if (params.get("template")) await templateEditor(editor, params.get("template"), planRows);
  }

  function fillList(list, settled, detail, kind, selected) {
    if (settled.status === "rejected") { list.replaceChildren(h("li", { class: "error-text", text: t("common.unavailable", { error: describe(settled.reason) }) })); return; }
    if (!settled.value.length) { list.replaceChildren(h("li", { class: "muted", text: t("common.none") })); return; }
    list.replaceChildren(...settled.value.map((item) => h("li", {
      class: item.name === selected ? "selected" : "",
      testid: `${kind}-${item.name}`,
      on: { click: () => { location.hash = `#/plans?${kind}=${encodeURIComponent(item.name)}`; } },
    }, h("div", { text: item.name }), h("div", { class: "muted small", text: detail(item) }))));
  }

  // Previews render the plan and template for a real customer through outreach, in both languages
  // side by side; they refresh when the customer changes and after every save. With ``draft`` (the
  // template editor) they render the texts as being edited, so a change is seen before it is saved.
  function previewPanel(planName, draft = () => null) {
    const customer = h("input", { name: "customer_id", placeholder: t("plans.previewHint"), testid: "preview-customer", value: sessionStorage.getItem("huitou.previewCustomer") || "" });
    const boxes = Object.fromEntries(LOCALES.map((locale) => [locale, h("div", { class: "preview", testid: `preview-${locale}` })]));
    let timer = null;
    let generation = 0;
    async function refresh() {
      const mine = ++generation;
      const id = customer.value.trim();
      sessionStorage.setItem("huitou.previewCustomer", id);
      await Promise.all(LOCALES.map(async (locale) => {
        const box = boxes[locale];
        if (!planName()) { box.textContent = "—"; return; }
        if (!id) { box.replaceChildren(h("span", { class: "muted", text: t("plans.previewHint") })); return; }
        try {
          const body = { locale, customer_id: id };
          const drafted = draft();
          if (drafted) body.draft_locales = drafted;
          const result = await api("POST", `/care-plans/${encodeURIComponent(planName())}/preview`, { body });
          if (mine !== generation) return;
          box.replaceChildren(h("div", { class: "preview-subject", text: result.subject }), h("div", { text: result.body }));
          box.dataset.rendered = String(mine);
        } catch (error) {
          if (mine === generation) box.replaceChildren(h("span", { class: "error-text", text: describe(error) }));
        }
      }));
    }
    const schedule = () => { clearTimeout(timer); timer = setTimeout(refresh, 300); };
    customer.addEventListener("input", schedule);
    const panel = card(t("plans.preview"), h("label", {}, t("plans.previewCustomer"), customer),
      h("div", { class: "grid" }, LOCALES.map((locale) => h("div", {}, h("h3", { text: locale }), boxes[locale]))));
    return { panel, refresh, schedule, customer };
  }

  async function planEditor(editor, name) {
    const path = `/care-plans/${encodeURIComponent(name)}`;
    let plan;
    try { plan = await api("GET", path); } catch (error) { editor.replaceChildren(card(name, h("p", { class: "error-text", text: describe(error) }))); return; }
    const text = h("textarea", { rows: 22, testid: "plan-json", spellcheck: false });
    text.value = JSON.stringify(plan.definition, null, 2);
    const problem = h("p", { class: "error-text", testid: "plan-problem" });
    const meta = h("p", { class: "muted small", testid: "plan-version", text: versionLine(plan) });
    const preview = previewPanel(() => name);
    editor.replaceChildren(
      card(`${t("plans.editPlan")}: ${name}`,
        plan.definition.description ? h("p", { class: "muted", text: plan.definition.description }) : null,
        meta,
        h("label", {}, t("plans.json"), text), problem,
        canWrite() ? h("button", { type: "button", testid: "plan-save", text: t("common.save"), on: { click: async () => {
          let body;
          try { body = JSON.parse(text.value); } catch (error) { problem.textContent = t("plans.invalidJson", { error: error.message }); return; }
          problem.textContent = "";
          try {
            meta.textContent = versionLine(await api("PUT", path, { body }));
            notify(t("common.saved"));
            await preview.refresh();
          } catch (error) { problem.textContent = describe(error); }
        } } }) : null),
      preview.panel,
      canWrite() ? testSendCard(name, preview.customer) : null);
    await preview.refresh();
  }

  async function templateEditor(editor, name, plans) {
    const path = `/templates/${encodeURIComponent(name)}`;
    let template;
    try { template = await api("GET", path); } catch (error) { editor.replaceChildren(card(name, h("p", { class: "error-text", text: describe(error) }))); return; }
    const locales = JSON.parse(JSON.stringify(template.locales || {}));
    const users = plans.filter((plan) => plan.definition.template === name).map((plan) => plan.name);
    const planChoice = h("select", { testid: "preview-plan" }, users.map((plan) => h("option", { value: plan, text: plan })));
    const preview = previewPanel(() => planChoice.value, () => locales);
    planChoice.addEventListener("change", () => preview.refresh());
    const problem = h("p", { class: "error-text", testid: "template-problem" });
    const meta = h("p", { class: "muted small", testid: "template-version", text: versionLine(template) });
    const fields = LOCALES.map((locale) => {
      locales[locale] = locales[locale] || { subject: "", body: "" };
      const subject = h("input", { name: `subject-${locale}`, value: locales[locale].subject || "", testid: `template-subject-${locale}` });
      const body = h("textarea", { name: `body-${locale}`, rows: 7, testid: `template-body-${locale}`, spellcheck: false });
      body.value = locales[locale].body || "";
      subject.addEventListener("input", () => { locales[locale].subject = subject.value; preview.schedule(); });
      body.addEventListener("input", () => { locales[locale].body = body.value; preview.schedule(); });
      return card(`${t("plans.editTemplate")}: ${name} · ${locale}`, h("label", {}, t("plans.subject"), subject), h("label", {}, t("plans.body"), body));
    });
    const save = async () => {
      problem.textContent = "";
      try {
        const saved = await api("PUT", path, { body: { locales } });
        meta.textContent = versionLine(saved);
        notify(t("common.saved"));
        await preview.refresh();
      } catch (error) {
        problem.textContent = describe(error);
      }
    };
    editor.replaceChildren(
      ...fields,
      card(null, problem, meta,
        h("p", { class: "muted small", text: t("plans.draftNote") }),
        canWrite() ? h("button", { type: "button", testid: "template-save", text: t("common.save"), on: { click: save } }) : null),
      users.length ? card(null, h("label", {}, t("plans.previewWith"), planChoice)) : card(null, h("p", { class: "muted", text: t("plans.unused") })),
      preview.panel);
    await preview.refresh();
  }

  function versionLine(thing) {
    return `v${thing.version} · ${thing.origin} · ${show(thing.updated_by)} · ${when(thing.updated_at)}`;
  }

  function testSendCard(plan, customer) {
    const to = h("input", { name: "to", type: "email", placeholder: "ops@example.com", testid: "test-address", required: true });
    return card(t("plans.testSend"), h("form", { class: "row", on: { submit: async (e) => {
      e.preventDefault();
      try {
        const body = { to: to.value, locale: lang };
        if (customer.value.trim()) body.customer_id = customer.value.trim();
        await api("POST", `/care-plans/${encodeURIComponent(plan)}/test-send`, { body });
        notify(t("plans.sent"));
      } catch (error) { fail(error); }
    } } }, h("label", {}, t("plans.testAddress"), to), h("button", { type: "submit", class: "secondary", testid: "test-send", text: t("plans.testSend") })));
  }

  // ----- audit -----
  async function auditView() {
    const box = h("div", { testid: "audit-entries", text: t("common.loading") });
    view.replaceChildren(h("h1", { text: t("audit.title") }), card(null, box));
    try {
      const data = await api("GET", "/audit", { query: { limit: 100 } });
      const head = h("tr", {}, ["audit.at", "audit.actor", "audit.action", "audit.target", "audit.status", "audit.changes"].map((key) => h("th", { text: t(key) })));
      box.replaceChildren(h("table", {}, h("thead", {}, head), h("tbody", {}, data.items.map((entry) => h("tr", {},
        h("td", { text: when(entry.at) }), h("td", { text: entry.actor }), h("td", { text: entry.action }), h("td", { class: "small", text: entry.target }),
        h("td", { text: show(entry.status) }), h("td", { class: "small", text: `${show(entry.before)} → ${show(entry.after)}`.slice(0, 300) }))))));
    } catch (error) {
      box.textContent = t("common.unavailable", { error: describe(error) });
    }
  }

  // ---------- routing ----------
  const ROUTES = [
    [/^#\/dashboard/, dashboardView],
    [/^#\/customers\/([^?]+)/, (m) => customerFileView(decodeURIComponent(m[1]))],
    [/^#\/customers/, customersView],
    [/^#\/touches/, touchesView],
    [/^#\/plans/, plansView],
    [/^#\/audit/, auditView],
  ];

  async function render() {
    applyStaticText();
    const hash = location.hash || "#/dashboard";
    if (!sessionStorage.getItem(KEY_STORE) || hash.startsWith("#/login")) {
      if (!hash.startsWith("#/login")) { location.hash = "#/login"; return; }
      loginView();
      return;
    }
    document.querySelectorAll("#nav a").forEach((link) => link.classList.toggle("active", hash.startsWith(link.getAttribute("href"))));
    for (const [pattern, handler] of ROUTES) {
      const match = hash.match(pattern);
      if (match) {
        try { await handler(match); } catch (error) { view.replaceChildren(card(t("common.error"), h("p", { class: "error-text", text: describe(error) }))); }
        view.dataset.ready = hash;
        return;
      }
    }
    location.hash = "#/dashboard";
  }

  document.getElementById("lang").addEventListener("click", () => {
    lang = lang === "zh-CN" ? "en" : "zh-CN";
    localStorage.setItem(LANG_STORE, lang);
    render();
  });
  document.getElementById("logout").addEventListener("click", () => logout());
  window.addEventListener("hashchange", render);

  try { me = JSON.parse(sessionStorage.getItem("huitou.me") || "null"); } catch (_) { me = null; }
  showSession();
  render();
})();
