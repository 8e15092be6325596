/*
 * broker partner portal: the registration stats chart, drawn as inline SVG (no library).
 *
 * window.BrokerStats.chart(stats) returns an <svg> for a GET .../stats body: per bucket a bar
 * stacked by outcome (successes at the bottom, failures on top), the p95 latency as a line on
 * its own axis (right), and local times on the x-axis. Every bar carries data-outcome,
 * data-start and data-count, and a <title> a pointer or screen reader can read. Text is set
 * with textContent only: API strings never become markup.
 */
(function () {
  "use strict";

  const SVG = "http://www.w3.org/2000/svg";
  const W = 960, H = 300;
  const M = { top: 18, right: 64, bottom: 46, left: 56 };
  const PW = W - M.left - M.right, PH = H - M.top - M.bottom;
  const MAX_GAP = 4;
  const BUCKET_MS = { "1h": 60e3, "24h": 24 * 60e3, "7d": 168 * 60e3 };

  function s(tag, attrs, ...children) {
    const node = document.createElementNS(SVG, tag);
    for (const [k, v] of Object.entries(attrs || {})) if (v !== undefined && v !== null) node.setAttribute(k, String(v));
    for (const c of children) if (c !== null && c !== undefined) node.append(c instanceof Node ? c : document.createTextNode(String(c)));
    return node;
  }

  /** A 1, 2 or 5 x 10^n step at or above value (at least 1 for counts). */
  function niceStep(value, integer) {
    if (value <= 0) return 1;
    const p = 10 ** Math.floor(Math.log10(value));
    let step = 10 * p;
    for (const m of [1, 2, 5]) if (m * p >= value) { step = m * p; break; }
    return integer ? Math.max(1, Math.round(step)) : step;
  }

  /** Four equal steps from 0 to a round top that holds max: [top, step]. */
  function axis(max, integer) {
    const step = niceStep(Math.max(max, integer ? 1 : 0.001) / 4, integer);
    return [step * Math.max(1, Math.ceil(max / step)), step];
  }

  /** The start of the trailing run of buckets that only failed (empty buckets skipped), or null
   * when the latest bucket with attempts had a success. */
  function failingSince(series) {
    let since = null;
    for (let i = series.length - 1; i >= 0; i--) {
      const b = series[i];
      if (!b.success && !b.failure) continue;
      if (b.success) break;
      since = i;
    }
    return since;
  }

  function clock(d) { return d.toLocaleTimeString(undefined, { hour: "numeric", minute: "2-digit" }); }
  function day(d) { return d.toLocaleDateString(undefined, { weekday: "short", day: "numeric" }); }

  function axisLabel(d, period) {
    return period === "7d" ? `${day(d)} ${clock(d)}` : clock(d);
  }

  /** "120 ms", "2.5 s"; axis labels keep the decimals a small step needs. */
  function formatMs(ms, exact) {
    if (ms === null || ms === undefined) return "–";
    if (ms >= 1000) return `${+(ms / 1000).toFixed(ms >= 10000 ? 0 : 1)} s`;
    if (exact && ms < 10) return `${+ms.toFixed(2)} ms`;
    return `${Math.round(ms)} ms`;
  }

  function bucketTitle(b, period) {
    const start = new Date(b.start);
    const end = new Date(start.getTime() + BUCKET_MS[period]);
    const span = period === "7d" ? `${day(start)} ${clock(start)} – ${day(end)} ${clock(end)}` : `${clock(start)} – ${clock(end)}`;
    const total = b.success + b.failure;
    if (!total) return `${span}: no attempts`;
    return `${span}: ${b.success} succeeded, ${b.failure} failed, p95 ${formatMs(b.p95Ms)}`;
  }

  function chart(stats) {
    const series = stats.series || [];
    const period = stats.period;
    const n = series.length || 60;
    const slot = PW / n;
    const barW = Math.max(1, slot * 0.78);
    const [maxCount, countStep] = axis(Math.max(0, ...series.map((b) => b.success + b.failure)), true);
    const latencies = series.map((b) => b.p95Ms).filter((v) => v !== null && v !== undefined);
    const [maxMs, msStep] = axis(Math.max(1, ...latencies), false);
    const y = (count) => M.top + PH - (count / maxCount) * PH;
    const yMs = (ms) => M.top + PH - (ms / maxMs) * PH;
    const x = (i) => M.left + i * slot;

    const total = (stats.attempts.success || 0) + (stats.attempts.failure || 0);
    const title = s("title", { id: "stats-chart-title" }, `Attempts per ${period === "1h" ? "minute" : period === "24h" ? "24 minutes" : "168 minutes"}, by outcome, with p95 latency`);
    const desc = s("desc", { id: "stats-chart-desc" },
      total ? `${stats.attempts.success} succeeded and ${stats.attempts.failure} failed in the last ${period}.` : `No attempts in the last ${period}.`);
    const svg = s("svg", {
      viewBox: `0 0 ${W} ${H}`, class: "stats-chart", role: "img",
      "aria-labelledby": "stats-chart-title stats-chart-desc", "data-period": period,
    }, title, desc);

    // Grid and left axis (attempts).
    const grid = s("g", { class: "grid" });
    const ticks = Math.round(maxCount / countStep);
    for (let t = 0; t <= ticks; t++) {
      const yy = y(t * countStep);
      grid.append(s("line", { x1: M.left, x2: M.left + PW, y1: yy, y2: yy }));
      grid.append(s("text", { x: M.left - 8, y: yy + 4, class: "axis-count", "text-anchor": "end" }, String(t * countStep)));
    }
    if (latencies.length) {
      const msTicks = Math.round(maxMs / msStep);
      for (let t = 0; t <= msTicks; t++) {
        grid.append(s("text", { x: M.left + PW + 8, y: yMs(t * msStep) + 4, class: "axis-ms", "text-anchor": "start" }, formatMs(t * msStep, true)));
      }
    }
    grid.append(s("text", { x: 14, y: M.top + PH / 2, class: "axis-title", transform: `rotate(-90 14 ${M.top + PH / 2})`, "text-anchor": "middle" }, "attempts"));
    if (latencies.length) {
      const xr = W - 10;
      grid.append(s("text", { x: xr, y: M.top + PH / 2, class: "axis-title axis-ms", transform: `rotate(90 ${xr} ${M.top + PH / 2})`, "text-anchor": "middle" }, "p95 latency"));
    }
    svg.append(grid);

    // x-axis: a tick and a local time every 10 buckets, and "now" at the right end.
    const xaxis = s("g", { class: "x-axis" });
    xaxis.append(s("line", { x1: M.left, x2: M.left + PW, y1: M.top + PH, y2: M.top + PH }));
    series.forEach((b, i) => {
      if (i % 10 !== 0) return;
      const xx = x(i);
      xaxis.append(s("line", { x1: xx, x2: xx, y1: M.top + PH, y2: M.top + PH + 5 }));
      xaxis.append(s("text", { x: xx, y: M.top + PH + 20, "text-anchor": "start", class: "axis-time", "data-start": b.start }, axisLabel(new Date(b.start), period)));
    });
    xaxis.append(s("text", { x: M.left + PW, y: M.top + PH + 38, "text-anchor": "end", class: "axis-now" }, "now →"));
    svg.append(xaxis);

    // Bars: success at the bottom, failure stacked on top.
    const bars = s("g", { class: "bars" });
    series.forEach((b, i) => {
      const group = s("g", { class: "bucket", "data-start": b.start, "data-index": i });
      group.append(s("title", {}, bucketTitle(b, period)));
      // A full-height transparent target so the title shows anywhere in the bucket's column.
      group.append(s("rect", { x: x(i), y: M.top, width: slot, height: PH, class: "hit" }));
      const bx = x(i) + (slot - barW) / 2;
      if (b.success) {
        group.append(s("rect", { x: bx, y: y(b.success), width: barW, height: y(0) - y(b.success), class: "bar-success", "data-outcome": "success", "data-count": b.success, "data-start": b.start }));
      }
      if (b.failure) {
        const top = b.success + b.failure;
        group.append(s("rect", { x: bx, y: y(top), width: barW, height: y(b.success) - y(top), class: "bar-failure", "data-outcome": "failure", "data-count": b.failure, "data-start": b.start }));
      }
      bars.append(group);
    });
    svg.append(bars);

    // p95 line: solid between neighbouring buckets, dashed across a few buckets without attempts
    // (no data there, not 0 ms), open across longer gaps.
    let solid = "", dashed = "";
    let last = null;
    const dots = s("g", { class: "p95-dots" });
    series.forEach((b, i) => {
      if (b.p95Ms === null || b.p95Ms === undefined) return;
      const xx = (x(i) + slot / 2).toFixed(1), yy = yMs(b.p95Ms).toFixed(1);
      if (last) {
        const seg = `M${last.xx},${last.yy} L${xx},${yy} `;
        if (i === last.i + 1) solid += seg;
        else if (i - last.i <= MAX_GAP) dashed += seg;   // a long gap is left open
      }
      last = { i, xx, yy };
      dots.append(s("circle", { cx: xx, cy: yy, r: 3, "data-p95": b.p95Ms, "data-start": b.start }));
    });
    if (dashed) svg.append(s("path", { d: dashed.trim(), class: "p95-line p95-gap" }));
    if (solid) svg.append(s("path", { d: solid.trim(), class: "p95-line" }));
    svg.append(dots);

    // "Failing since": where the trailing run of failure-only buckets starts.
    const since = failingSince(series);
    if (since !== null) {
      const xx = x(since);
      const when = axisLabel(new Date(series[since].start), period);
      const mark = s("g", { class: "failing-since", "data-start": series[since].start });
      mark.append(s("line", { x1: xx, x2: xx, y1: M.top, y2: M.top + PH }));
      const right = xx > M.left + PW * 0.7;
      mark.append(s("text", { x: right ? xx - 6 : xx + 6, y: M.top + 12, "text-anchor": right ? "end" : "start" }, `failing since ${when}`));
      svg.append(mark);
      desc.textContent += ` Every attempt has failed since ${when}.`;
    }

    if (!total) {
      svg.append(s("text", { x: M.left + PW / 2, y: M.top + PH / 2, "text-anchor": "middle", class: "chart-empty" }, "No attempts in this period"));
    }
    return svg;
  }

  /** "3 min", "2 h 5 min", "4 d 3 h": how long ago iso was, from now (ms since epoch). */
  function age(iso, now) {
    const sec = Math.max(0, Math.round((now - new Date(iso).getTime()) / 1000));
    if (sec < 60) return `${sec} s`;
    const min = Math.floor(sec / 60);
    if (min < 60) return `${min} min`;
    const h = Math.floor(min / 60);
    if (h < 48) return `${h} h ${min % 60} min`;
    return `${Math.floor(h / 24)} d ${h % 24} h`;
  }

  window.BrokerStats = { chart, age, formatMs, failingSince };
})();
