// Small SVG charts drawn by hand: no library, no network. Every chart takes a series of
// {label, value} and returns an <svg> element sized by its viewBox (it scales to its card).
"use strict";

(function () {
  const SVG = "http://www.w3.org/2000/svg";
  const PALETTE = ["#2f6f62", "#4f9a8a", "#8cc2b4", "#d7a84b", "#c0644c", "#7b6aa8", "#5b7fa6", "#a3a3a3"];

  function el(tag, attrs, text) {
    const node = document.createElementNS(SVG, tag);
    for (const [name, value] of Object.entries(attrs || {})) node.setAttribute(name, String(value));
    if (text !== undefined) node.textContent = text;
    return node;
  }

  // Long names are shortened on the axis; the bar's tooltip keeps them whole.
  function short(text, max) {
    return text.length > max ? text.slice(0, max - 1) + "…" : text;
  }

  function svg(width, height, label) {
    return el("svg", { viewBox: `0 0 ${width} ${height}`, role: "img", "aria-label": label || "", class: "chart" });
  }

  function fmt(value, format) {
    if (format) return format(value);
    if (Math.abs(value) >= 1000) return Math.round(value).toLocaleString();
    return Number.isInteger(value) ? String(value) : value.toFixed(2);
  }

  function empty(label, message) {
    const root = svg(400, 60, label);
    root.appendChild(el("text", { x: 200, y: 35, "text-anchor": "middle", class: "chart-empty" }, message));
    return root;
  }

  // Vertical bars, one per label.
  function bars(series, options) {
    const opts = options || {};
    if (!series.length) return empty(opts.label, opts.emptyText || "—");
    const width = 420, height = 220, left = 36, bottom = 36, top = 18;
    const max = Math.max(...series.map((d) => d.value), 1);
    const slot = (width - left - 8) / series.length;
    const root = svg(width, height, opts.label);
    root.appendChild(el("line", { x1: left, y1: height - bottom, x2: width - 4, y2: height - bottom, class: "axis" }));
    series.forEach((d, i) => {
      const h = ((height - bottom - top) * d.value) / max;
      const x = left + i * slot + slot * 0.15;
      const y = height - bottom - h;
      const bar = el("rect", { x, y, width: slot * 0.7, height: Math.max(h, 0), fill: d.colour || PALETTE[i % PALETTE.length], rx: 3 });
      bar.appendChild(el("title", {}, `${d.label}: ${fmt(d.value, opts.format)}`));
      root.appendChild(bar);
      root.appendChild(el("text", { x: x + slot * 0.35, y: y - 4, "text-anchor": "middle", class: "chart-value" }, fmt(d.value, opts.format)));
      root.appendChild(el("text", { x: x + slot * 0.35, y: height - bottom + 16, "text-anchor": "middle", class: "chart-label" }, d.label));
    });
    return root;
  }

  // Horizontal bars in order, each with its share of the first stage: a funnel.
  function funnel(series, options) {
    const opts = options || {};
    if (!series.length) return empty(opts.label, opts.emptyText || "—");
    const width = 420, row = 30, labelWidth = 110;
    const height = series.length * row + 10;
    const max = Math.max(...series.map((d) => d.value), 1);
    const root = svg(width, height, opts.label);
    series.forEach((d, i) => {
      const w = ((width - labelWidth - 70) * d.value) / max;
      const y = 5 + i * row;
      const x = labelWidth + (width - labelWidth - 70 - w) / 2;
      root.appendChild(el("text", { x: labelWidth - 6, y: y + row / 2 + 4, "text-anchor": "end", class: "chart-label" }, d.label));
      const bar = el("rect", { x, y: y + 3, width: Math.max(w, 1), height: row - 8, fill: PALETTE[i % PALETTE.length], rx: 3 });
      bar.appendChild(el("title", {}, `${d.label}: ${fmt(d.value, opts.format)}`));
      root.appendChild(bar);
      const share = series[0].value ? ` (${Math.round((100 * d.value) / series[0].value)}%)` : "";
      root.appendChild(el("text", { x: width - 66, y: y + row / 2 + 4, class: "chart-value" }, fmt(d.value, opts.format) + share));
    });
    return root;
  }

  // A line over time: labels are dates, in order.
  function line(series, options) {
    const opts = options || {};
    if (!series.length) return empty(opts.label, opts.emptyText || "—");
    const width = 420, height = 220, left = 36, bottom = 36, top = 16, right = 10;
    const max = Math.max(...series.map((d) => d.value), 1);
    const step = series.length > 1 ? (width - left - right) / (series.length - 1) : 0;
    const x = (i) => left + (series.length > 1 ? i * step : (width - left - right) / 2);
    const y = (v) => height - bottom - ((height - bottom - top) * v) / max;
    const root = svg(width, height, opts.label);
    root.appendChild(el("line", { x1: left, y1: height - bottom, x2: width - right, y2: height - bottom, class: "axis" }));
    root.appendChild(el("text", { x: left - 4, y: top + 4, "text-anchor": "end", class: "chart-label" }, fmt(max, opts.format)));
    root.appendChild(el("text", { x: left - 4, y: height - bottom, "text-anchor": "end", class: "chart-label" }, "0"));
    const points = series.map((d, i) => `${x(i)},${y(d.value)}`).join(" ");
    root.appendChild(el("polyline", { points, fill: "none", stroke: PALETTE[0], "stroke-width": 2.5 }));
    const every = Math.max(1, Math.ceil(series.length / 7));
    series.forEach((d, i) => {
      const dot = el("circle", { cx: x(i), cy: y(d.value), r: 3.5, fill: PALETTE[0] });
      dot.appendChild(el("title", {}, `${d.label}: ${fmt(d.value, opts.format)}`));
      root.appendChild(dot);
      if (i % every === 0 || i === series.length - 1) {
        root.appendChild(el("text", { x: x(i), y: height - bottom + 16, "text-anchor": "middle", class: "chart-label" }, d.label));
      }
    });
    return root;
  }

  // Bars around a zero line: positive lift to the right, negative to the left.
  function diverging(series, options) {
    const opts = options || {};
    if (!series.length) return empty(opts.label, opts.emptyText || "—");
    const width = 420, row = 30, labelWidth = 150;
    const height = series.length * row + 10;
    const reach = Math.max(...series.map((d) => Math.abs(d.value)), 0.0001);
    const half = (width - labelWidth - 20) / 2;
    const zero = labelWidth + half;
    const root = svg(width, height, opts.label);
    root.appendChild(el("line", { x1: zero, y1: 0, x2: zero, y2: height, class: "axis" }));
    series.forEach((d, i) => {
      const y = 5 + i * row;
      const w = (half * Math.abs(d.value)) / reach;
      const x = d.value >= 0 ? zero : zero - w;
      root.appendChild(el("text", { x: labelWidth - 6, y: y + row / 2 + 4, "text-anchor": "end", class: "chart-label" }, short(d.label, 24)));
      const bar = el("rect", { x, y: y + 3, width: Math.max(w, 1), height: row - 8, fill: d.value >= 0 ? PALETTE[0] : PALETTE[4], rx: 3 });
      bar.appendChild(el("title", {}, `${d.label}: ${fmt(d.value, opts.format)}${d.note ? " — " + d.note : ""}`));
      root.appendChild(bar);
      const tx = d.value >= 0 ? x + w + 4 : x - 4;
      root.appendChild(el("text", { x: tx, y: y + row / 2 + 4, "text-anchor": d.value >= 0 ? "start" : "end", class: "chart-value" }, fmt(d.value, opts.format)));
    });
    return root;
  }

  // Stacked horizontal bars: one row per label, one segment per part (e.g. touches by status).
  function stacked(rows, options) {
    const opts = options || {};
    if (!rows.length) return empty(opts.label, opts.emptyText || "—");
    const parts = [...new Set(rows.flatMap((r) => Object.keys(r.parts)))];
    const width = 420, row = 28, labelWidth = 150, legend = 24;
    const height = rows.length * row + legend + 10;
    const max = Math.max(...rows.map((r) => Object.values(r.parts).reduce((a, b) => a + b, 0)), 1);
    const root = svg(width, height, opts.label);
    parts.forEach((part, j) => {
      const x = 10 + j * 95;
      root.appendChild(el("rect", { x, y: 6, width: 10, height: 10, fill: PALETTE[j % PALETTE.length] }));
      root.appendChild(el("text", { x: x + 14, y: 15, class: "chart-label" }, part));
    });
    rows.forEach((r, i) => {
      const y = legend + 5 + i * row;
      root.appendChild(el("text", { x: labelWidth - 6, y: y + row / 2 + 4, "text-anchor": "end", class: "chart-label" }, short(r.label, 24)));
      let x = labelWidth;
      parts.forEach((part, j) => {
        const value = r.parts[part] || 0;
        const w = ((width - labelWidth - 10) * value) / max;
        if (w <= 0) return;
        const seg = el("rect", { x, y: y + 3, width: w, height: row - 8, fill: PALETTE[j % PALETTE.length] });
        seg.appendChild(el("title", {}, `${r.label} · ${part}: ${value}`));
        root.appendChild(seg);
        x += w;
      });
    });
    return root;
  }

  window.HuitouCharts = { bars, funnel, line, diverging, stacked };
})();
