// Flotilla dashboard: every change goes through the REST API under
// /api/v1 (with the session's CSRF token); live figures come from one
// Server-Sent Events stream per page. No inline script: the page carries
// its data in <script type="application/json"> blocks and data- attributes.
(function () {
  "use strict";
  const csrf = (document.querySelector('meta[name="csrf-token"]') || {}).content || "";

  // ---- talking to the API ------------------------------------------------
  async function api(method, url, body) {
    const opts = { method, headers: { "Content-Type": "application/json", "X-CSRF-Token": csrf }, credentials: "same-origin" };
    if (body !== undefined) opts.body = JSON.stringify(body);
    const res = await fetch(url, opts);
    let data = null;
    const text = await res.text();
    try { data = text ? JSON.parse(text) : null; } catch (e) { data = { error: text }; }
    if (!res.ok) {
      const err = new Error((data && data.error) || res.status + " " + res.statusText);
      err.status = res.status; err.field = data && data.field; err.code = data && data.code;
      throw err;
    }
    return data;
  }
  window.flotillaAPI = api;

  const toast = document.getElementById("toast");
  let toastTimer;
  function say(msg, bad) {
    if (!toast) return;
    toast.textContent = msg;
    toast.className = "toast" + (bad ? " bad" : "");
    toast.hidden = false;
    clearTimeout(toastTimer);
    toastTimer = setTimeout(() => { toast.hidden = true; }, bad ? 8000 : 3000);
  }

  // ---- action buttons: <button data-act="POST /api/v1/..."> ---------------
  document.addEventListener("click", async (ev) => {
    const b = ev.target.closest("[data-act]");
    if (!b) return;
    ev.preventDefault();
    const [method, url] = b.dataset.act.split(" ");
    if (b.dataset.confirm && !window.confirm(b.dataset.confirm)) return;
    let target = url;
    if (b.dataset.typeToConfirm) {
      const want = b.dataset.typeToConfirm;
      const got = window.prompt("Type " + want + " to confirm");
      if (got !== want) { say("Not confirmed: nothing changed.", true); return; }
      target += (url.includes("?") ? "&" : "?") + "confirm=" + encodeURIComponent(got);
    }
    let body;
    if (b.dataset.body) body = JSON.parse(b.dataset.body);
    const seqs = b.dataset.seqs ? b.dataset.seqs.split(",").map(Number) : null;
    if (seqs) body = { seqs };
    b.disabled = true;
    try {
      const out = await api(method, target, body);
      say(b.dataset.done || "Done.");
      if (b.dataset.go) { location.href = b.dataset.go; return; }
      if (out && b.dataset.goTask && out.id) { location.href = "/tasks/" + encodeURIComponent(out.id); return; }
      setTimeout(() => location.reload(), 400);
    } catch (e) {
      say(e.message, true);
      b.disabled = false;
    }
  });

  // ---- forms that post JSON: <form data-api="POST /api/v1/schedules"> ------
  document.addEventListener("submit", async (ev) => {
    const f = ev.target.closest("form[data-api]");
    if (!f) return;
    ev.preventDefault();
    const [method, url] = f.dataset.api.split(" ");
    const body = {};
    for (const el of f.elements) {
      if (!el.name || el.disabled) continue;
      el.removeAttribute("aria-invalid");
      if (el.type === "checkbox") { body[el.name] = el.checked; continue; }
      const v = el.value.trim();
      if (el.dataset.json !== undefined) {
        if (v === "") continue;
        try { body[el.name] = JSON.parse(v); } catch (e) { return fieldError(f, el.name, el.name + ": not valid JSON (" + e.message + ")"); }
        continue;
      }
      if (v === "" && el.dataset.keepEmpty === undefined) continue;
      if (el.type === "number") { body[el.name] = Number(v); continue; }
      if (el.type === "datetime-local") { body[el.name] = new Date(v).toISOString(); continue; }
      body[el.name] = v;
    }
    for (const p of f.querySelectorAll(".field-error")) p.textContent = "";
    const formErr = f.querySelector(".form-error");
    if (formErr) formErr.textContent = "";
    try {
      const out = await api(method, url, body);
      if (f.dataset.go) location.href = f.dataset.go.replace("{name}", encodeURIComponent((out && out.name) || ""));
      else { say("Saved."); setTimeout(() => location.reload(), 400); }
    } catch (e) {
      if (!fieldError(f, e.field, e.message) && formErr) formErr.textContent = e.message;
      say(e.message, true);
    }
  });

  function fieldError(form, field, msg) {
    if (!field) return false;
    const el = form.elements[field];
    const p = form.querySelector('.field-error[data-for="' + field + '"]');
    if (!el || !p) return false;
    el.setAttribute("aria-invalid", "true");
    p.textContent = msg;
    el.focus();
    return true;
  }

  // ---- login --------------------------------------------------------------
  const login = document.getElementById("login-form");
  if (login) {
    login.addEventListener("submit", async (ev) => {
      ev.preventDefault();
      const err = document.getElementById("login-error");
      err.textContent = "";
      try {
        const res = await fetch("/api/v1/login", { method: "POST", headers: { "Content-Type": "application/json" },
          body: JSON.stringify({ name: login.elements.name.value, password: login.elements.password.value }) });
        const data = await res.json();
        if (!res.ok) throw new Error(data.error || res.statusText);
        location.href = login.dataset.next || "/";
      } catch (e) { err.textContent = e.message; }
    });
  }

  // ---- times: relative and absolute, in the viewer's zone -----------------
  const rtf = new Intl.RelativeTimeFormat(undefined, { numeric: "auto" });
  function relative(d) {
    const s = (d.getTime() - Date.now()) / 1000;
    const a = Math.abs(s);
    if (a < 60) return rtf.format(Math.round(s), "second");
    if (a < 3600) return rtf.format(Math.round(s / 60), "minute");
    if (a < 86400) return rtf.format(Math.round(s / 3600), "hour");
    return rtf.format(Math.round(s / 86400), "day");
  }
  function paintTimes() {
    for (const t of document.querySelectorAll("time[datetime]")) {
      const d = new Date(t.getAttribute("datetime"));
      if (isNaN(d)) continue;
      if (t.dataset.local !== undefined) { t.textContent = d.toLocaleString(); continue; }
      t.textContent = relative(d);
      t.title = d.toLocaleString() + " (" + d.toISOString().replace(".000Z", "Z") + ")";
    }
  }
  paintTimes();
  setInterval(paintTimes, 10000);

  // ---- overview charts and live figures -----------------------------------
  const seriesEl = document.getElementById("series");
  const css = getComputedStyle(document.documentElement);
  const colors = ["--s-sent", "--s-succeeded", "--s-failed", "--s-retried"].map((v) => css.getPropertyValue(v).trim());
  const names = ["enqueued", "succeeded", "failed", "retried"];
  let charts = [];
  // The live charts (uPlot instances: hour, then 5 minutes), for the
  // browser tests and for a look from the developer console.
  window.flotillaCharts = charts;
  if (seriesEl && window.uPlot) {
    const data = JSON.parse(seriesEl.textContent);
    const hour = bucketize(data.start, data.counts, 10);
    const five = bucketize(data.start + data.counts.length - 300, data.counts.slice(-300), 1);
    charts.push(makeChart("chart-hour", hour, "per 10 s"), makeChart("chart-5m", five, "per second"));
    charts[0].step = 10; charts[1].step = 1; charts[1].max = 300; charts[0].max = 360;
  }
  function bucketize(start, counts, step) {
    const xs = [], ys = [[], [], [], []];
    for (let i = 0; i < counts.length; i += step) {
      let sum = [0, 0, 0, 0];
      for (let j = i; j < Math.min(i + step, counts.length); j++) for (let k = 0; k < 4; k++) sum[k] += counts[j][k];
      xs.push(start + i);
      for (let k = 0; k < 4; k++) ys[k].push(sum[k] / step);
    }
    return [xs, ...ys];
  }
  function makeChart(id, data, unit) {
    const el = document.getElementById(id);
    const opts = {
      width: Math.max(280, el.clientWidth - 4), height: 220, legend: { show: false },
      axes: [{ stroke: css.getPropertyValue("--muted").trim(), grid: { stroke: css.getPropertyValue("--line").trim() } },
             { stroke: css.getPropertyValue("--muted").trim(), grid: { stroke: css.getPropertyValue("--line").trim() }, label: "tasks/s (" + unit + ")" }],
      series: [{}].concat(names.map((n, i) => ({ label: n, stroke: colors[i], width: 1.5 }))),
    };
    const u = new uPlot(opts, data, el);
    u.rows = data;
    return u;
  }
  window.addEventListener("resize", () => { for (const c of charts) { const el = c.root.parentNode; c.setSize({ width: Math.max(280, el.clientWidth - 4), height: 220 }); } });

  // ---- Server-Sent Events --------------------------------------------------
  const liveEl = document.getElementById("live");
  if (document.body.dataset.live !== undefined && window.EventSource) {
    const es = new EventSource("/ui/live");
    es.onopen = () => { if (liveEl) { liveEl.textContent = "live"; liveEl.classList.add("on"); } };
    es.onerror = () => { if (liveEl) { liveEl.textContent = "reconnecting…"; liveEl.classList.remove("on"); } };
    es.onmessage = (m) => { const u = JSON.parse(m.data); onUpdate(u); };
  }
  let acc = null; // the current 10 s bucket of the hour chart
  function onUpdate(u) {
    setText("v-workers", u.workers);
    setText("v-running", u.running);
    setText("v-dead", u.dead);
    setBad("v-dead", u.dead > 0);
    setText("v-leader", u.leader || "none");
    setText("v-lag", u.lag_p99_ms ? u.lag_p99_ms.toFixed(1) + " ms" : "–");
    const l5 = u.last5m;
    setText("v-enq5", l5[0]); setText("v-ok5", l5[1]); setText("v-fail5", l5[2]);
    setBad("v-fail5", l5[2] > 0);
    const done = l5[1] + l5[2];
    setText("v-rate", done ? (100 * l5[2] / done).toFixed(1) + " %" : "–");
    for (const q of u.queues || []) {
      const m = document.querySelector('meter[data-queue="' + CSS.escape(q.queue) + '"]');
      if (m) { m.value = q.pending; m.title = q.pending + " pending"; }
      setText("q-pending-" + q.queue, q.pending);
      setText("q-inflight-" + q.queue, q.in_flight);
    }
    if (charts.length === 2) {
      const c5 = charts[1], ch = charts[0];
      push(c5, u.t, u.counts, 1);
      if (!acc || u.t - acc.t >= 10) { acc = { t: u.t, sum: [0, 0, 0, 0], n: 0 }; push(ch, u.t, [0, 0, 0, 0], 10, true); }
      for (let k = 0; k < 4; k++) acc.sum[k] += u.counts[k];
      acc.n++;
      const rows = ch.rows;
      for (let k = 0; k < 4; k++) rows[k + 1][rows[0].length - 1] = acc.sum[k] / 10;
      ch.setData(rows);
    }
    const errs = document.getElementById("live-errors");
    if (errs) errs.textContent = u.errors && u.errors.length ? "Unavailable now: " + u.errors.join(", ") : "";
  }
  function push(chart, t, counts, step, placeholder) {
    const rows = chart.rows;
    rows[0].push(t);
    for (let k = 0; k < 4; k++) rows[k + 1].push(placeholder ? 0 : counts[k] / step);
    while (rows[0].length > chart.max) for (const r of rows) r.shift();
    if (!placeholder) chart.setData(rows);
  }
  function setText(id, v) { const el = document.getElementById(id); if (el) el.textContent = v; }
  function setBad(id, bad) { const el = document.getElementById(id); if (el) el.classList.toggle("bad", bad); }

  // ---- widths decided by data (CSP: no style attributes) -------------------
  for (const el of document.querySelectorAll("[data-width]")) el.style.width = el.dataset.width;
})();
