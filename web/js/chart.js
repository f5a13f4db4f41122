// The history browser's block-weight chart: one line per merge over the blocks, as SVG markup that scales to
// its box (a fixed viewBox, width 100%), and the legend's entries. Pure.

export const COLORS = ["#4fc3f7", "#ffb74d", "#81c784", "#e57373", "#ce93d8", "#fff176", "#4db6ac", "#f06292",
  "#a1887f", "#90a4ae"];

const esc = (s) => String(s).replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
const num = (x) => (Math.round(x * 10) / 10).toString();
const LABEL_PITCH = 9; // viewBox units a vertical block label needs

/**
 * `data`: {labels: [block…], series: [{id, name, values: [α per block]}]} as the history route gives it.
 * Returns SVG markup: y from min(0, lowest) to max(1, highest), a dashed zero line when weights go below 0,
 * block names along the bottom (thinned when they would overlap), one polyline per merge.
 */
export function chartSvg(data, { width = 360, height = 210 } = {}) {
  const { labels, series } = data;
  const left = 26, right = 6, top = 8, bottom = 38;
  const all = series.flatMap((s) => s.values);
  const lo = Math.min(0, ...all), hi = Math.max(1, ...all);
  const w = width - left - right, h = height - top - bottom;
  const x = (i) => left + (labels.length > 1 ? (i * w) / (labels.length - 1) : w / 2);
  const y = (v) => top + h - ((v - lo) * h) / (hi - lo || 1);
  const parts = [`<svg xmlns="http://www.w3.org/2000/svg" class="sm-chart" viewBox="0 0 ${width} ${height}" `
    + `width="100%" preserveAspectRatio="xMidYMid meet">`];
  for (const v of [lo, (lo + hi) / 2, hi]) {
    parts.push(`<line class="sm-chart-grid" x1="${left}" x2="${width - right}" y1="${num(y(v))}" y2="${num(y(v))}"/>`,
      `<text class="sm-chart-axis" x="${left - 3}" y="${num(y(v) + 3)}" text-anchor="end">${esc(+v.toFixed(2))}</text>`);
  }
  if (lo < 0) parts.push(`<line class="sm-chart-zero" x1="${left}" x2="${width - right}" y1="${num(y(0))}" y2="${num(y(0))}"/>`);
  const every = Math.max(1, Math.ceil((labels.length * LABEL_PITCH) / w));
  labels.forEach((label, i) => {
    if (i % every === 0)
      parts.push(`<text class="sm-chart-label" text-anchor="end" transform="translate(${num(x(i) + 3)},${top + h + 4}) `
        + `rotate(-90)">${esc(label)}</text>`);
  });
  series.forEach((s, k) => {
    const points = s.values.map((v, i) => `${num(x(i))},${num(y(v))}`).join(" ");
    parts.push(`<polyline class="sm-chart-line" data-id="${esc(s.id)}" fill="none" stroke="${COLORS[k % COLORS.length]}" `
      + `stroke-width="1.6" stroke-linejoin="round" points="${points}"><title>#${esc(s.id)} ${esc(s.name)}</title></polyline>`);
  });
  parts.push("</svg>");
  return parts.join("");
}

/** The legend: each merge's colour and label, in the chart's order. */
export function legend(series) {
  return series.map((s, k) => ({ color: COLORS[k % COLORS.length], text: `#${s.id} ${s.name}` }));
}
