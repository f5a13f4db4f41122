// The history browser's block-weight chart: one line per merge over the blocks, as SVG markup. Pure.

export const COLORS = ["#4fc3f7", "#ffb74d", "#81c784", "#e57373", "#ba68c8", "#fff176", "#4db6ac", "#f06292",
  "#a1887f", "#90a4ae"];

const esc = (s) => String(s).replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
const num = (x) => (Math.round(x * 10) / 10).toString();

/**
 * `data`: {labels: [block…], series: [{id, name, values: [α per block]}]} as the history route gives it.
 * Returns an SVG string `width` × `height` with axes, a zero line, one polyline per merge and a legend.
 */
export function chartSvg(data, { width = 420, height = 220 } = {}) {
  const { labels, series } = data;
  const left = 34, right = 8, top = 10, legendRows = Math.ceil(series.length / 3);
  const bottom = 30 + legendRows * 14;
  const all = series.flatMap((s) => s.values);
  const lo = Math.min(0, ...all), hi = Math.max(1, ...all);
  const w = width - left - right, h = height - top - bottom;
  const x = (i) => left + (labels.length > 1 ? (i * w) / (labels.length - 1) : w / 2);
  const y = (v) => top + h - ((v - lo) * h) / (hi - lo || 1);
  const parts = [`<svg xmlns="http://www.w3.org/2000/svg" class="sm-chart" width="${width}" height="${height}" `
    + `viewBox="0 0 ${width} ${height}">`];
  for (const v of [lo, (lo + hi) / 2, hi]) {
    parts.push(`<line class="sm-chart-grid" x1="${left}" x2="${width - right}" y1="${num(y(v))}" y2="${num(y(v))}"/>`,
      `<text class="sm-chart-axis" x="${left - 4}" y="${num(y(v) + 3)}" text-anchor="end">${esc(+v.toFixed(2))}</text>`);
  }
  if (lo < 0) parts.push(`<line class="sm-chart-zero" x1="${left}" x2="${width - right}" y1="${num(y(0))}" y2="${num(y(0))}"/>`);
  const every = Math.max(1, Math.ceil(labels.length / 26));
  labels.forEach((label, i) => {
    if (i % every === 0)
      parts.push(`<text class="sm-chart-label" transform="translate(${num(x(i))},${top + h + 6}) rotate(60)">${esc(label)}</text>`);
  });
  series.forEach((s, k) => {
    const color = COLORS[k % COLORS.length];
    const points = s.values.map((v, i) => `${num(x(i))},${num(y(v))}`).join(" ");
    parts.push(`<polyline class="sm-chart-line" data-id="${esc(s.id)}" fill="none" stroke="${color}" `
      + `stroke-width="1.6" points="${points}"><title>#${esc(s.id)} ${esc(s.name)}</title></polyline>`);
    const lx = left + (k % 3) * (w / 3), ly = height - 6 - (legendRows - 1 - Math.floor(k / 3)) * 14;
    parts.push(`<rect x="${num(lx)}" y="${ly - 8}" width="10" height="3" fill="${color}"/>`,
      `<text class="sm-chart-legend" x="${num(lx + 14)}" y="${ly - 4}">#${esc(s.id)} ${esc(s.name.slice(0, 28))}</text>`);
  });
  parts.push("</svg>");
  return parts.join("");
}
