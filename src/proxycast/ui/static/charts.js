// Stacked bar charts drawn as SVG with the DOM (no library, no inline style: the page's CSP holds).
(function () {
  "use strict";
  const SVG = "http://www.w3.org/2000/svg";
  const FIXED = {other: "#8c8c8c", "": "#bab0ac"};

  function el(name, attributes, parent) {
    const node = document.createElementNS(SVG, name);
    for (const [key, value] of Object.entries(attributes)) node.setAttribute(key, String(value));
    if (parent) parent.appendChild(node);
    return node;
  }

  // A group's colour follows from its name (FNV-1a), not from its place in the legend: a model keeps
  // its colour from one range or refresh to the next. Hue from the hash; saturation and lightness from
  // other bits, so that two close hues still differ.
  function color(group) {
    if (Object.hasOwn(FIXED, group)) return FIXED[group];
    let hash = 0x811c9dc5;
    for (let i = 0; i < group.length; i++) {
      hash ^= group.charCodeAt(i);
      hash = Math.imul(hash, 0x01000193) >>> 0;
    }
    const hue = hash % 360;
    const saturation = 55 + ((hash >>> 9) % 3) * 12;
    const lightness = 42 + ((hash >>> 11) % 3) * 9;
    return `hsl(${hue}, ${saturation}%, ${lightness}%)`;
  }

  // container: an element; options: {buckets, start, bucketSeconds, groups, values(bucket, group),
  // format(value), label(group), time(seconds)}
  function stacked(container, options) {
    const width = 600, height = 200, left = 48, right = 8, top = 10, bottom = 22;
    const svg = el("svg", {viewBox: `0 0 ${width} ${height}`, role: "img"});
    const totals = [];
    for (let b = 0; b < options.buckets; b++) {
      let sum = 0;
      for (const g of options.groups) sum += options.values(b, g);
      totals.push(sum);
    }
    const max = Math.max(0, ...totals);
    const plotW = width - left - right, plotH = height - top - bottom;
    const step = plotW / options.buckets, bar = Math.max(1, step * 0.8);
    el("line", {x1: left, x2: width - right, y1: top + plotH, y2: top + plotH}, svg);
    el("line", {x1: left, x2: width - right, y1: top, y2: top}, svg);
    el("text", {x: left - 4, y: top + 10, "text-anchor": "end"}, svg).textContent =
      max ? options.format(max) : "0";
    el("text", {x: left - 4, y: top + plotH, "text-anchor": "end"}, svg).textContent = "0";
    el("text", {x: left, y: height - 4}, svg).textContent = options.time(options.start);
    el("text", {x: left + plotW / 2, y: height - 4, "text-anchor": "middle"}, svg).textContent =
      options.time(options.start + (options.buckets / 2) * options.bucketSeconds);
    el("text", {x: width - right, y: height - 4, "text-anchor": "end"}, svg).textContent =
      options.time(options.start + options.buckets * options.bucketSeconds);
    if (max > 0) {
      for (let b = 0; b < options.buckets; b++) {
        let y = top + plotH;
        for (const g of options.groups) {
          const value = options.values(b, g);
          if (!value) continue;
          const h = (value / max) * plotH;
          y -= h;
          const rect = el("rect", {
            x: (left + b * step + (step - bar) / 2).toFixed(2), y: y.toFixed(2),
            width: bar.toFixed(2), height: Math.max(h, 0.5).toFixed(2), fill: color(g),
            "data-group": g, "data-bucket": b, "data-value": value,
          }, svg);
          el("title", {}, rect).textContent =
            `${options.label(g)}: ${options.format(value)} (${options.time(options.start + b * options.bucketSeconds)})`;
        }
      }
    }
    container.replaceChildren(svg);
  }

  function swatch(group) {
    const svg = el("svg", {viewBox: "0 0 12 12", "aria-hidden": "true"});
    el("rect", {width: 12, height: 12, rx: 2, fill: color(group)}, svg);
    return svg;
  }

  window.ProxycastCharts = {stacked, swatch};
})();
