// Unit tests of the history browser's pure parts: the block-weight chart's SVG and the row texts.
import assert from "node:assert/strict";
import { test } from "node:test";

import { COLORS, chartSvg, legend } from "../../../web/js/chart.js";
import { modelsText, weightsText } from "../../../web/js/rows.js";

const points = (svg) => [...svg.matchAll(/<polyline[^>]*points="([^"]*)"/g)].map((m) => m[1].split(" ").map((p) => p.split(",").map(Number)));

test("one line per merge, one point per block, 1 above 0, labels and names escaped", () => {
  const labels = ["BASE", "IN00", "M00", "OUT00"];
  const svg = chartSvg({ labels, series: [{ id: 3, name: "a <b> & c", values: [0, 1, 0.5, 0] },
    { id: 7, name: "second", values: [1, 1, 1, 1] }] }, { width: 400, height: 200 });
  const lines = points(svg);
  assert.equal(lines.length, 2);
  assert.deepEqual(lines.map((l) => l.length), [4, 4]);
  const [first] = lines;
  assert.ok(first[1][1] < first[2][1] && first[2][1] < first[0][1], "y grows downwards: 1 above 0.5 above 0");
  assert.ok(first.every(([x], i) => i === 0 || x > first[i - 1][0]), "blocks left to right");
  assert.ok(first.every(([x, y]) => x >= 0 && x <= 400 && y >= 0 && y <= 200));
  for (const l of labels) assert.match(svg, new RegExp(`>${l}</text>`));
  assert.match(svg, /<title>#3 a &#60;b&#62; &#38; c<\/title>/);
  assert.doesNotMatch(svg, /<b>/);
  assert.match(svg, /viewBox="0 0 400 200"/);
  assert.deepEqual(legend([{ id: 3, name: "x" }, { id: 7, name: "y" }]), [{ color: COLORS[0], text: "#3 x" },
    { color: COLORS[1], text: "#7 y" }]);
});

test("negative weights get a zero line; 110 labels are thinned to fit", () => {
  const labels = Array.from({ length: 110 }, (_, i) => `B${i}`);
  const svg = chartSvg({ labels, series: [{ id: 1, name: "x", values: labels.map((_, i) => (i % 2 ? -0.5 : 1.5)) }] });
  assert.match(svg, /sm-chart-zero/);
  assert.equal(points(svg)[0].length, 110);
  const shown = [...svg.matchAll(/class="sm-chart-label"/g)].length;
  assert.ok(shown > 10 && shown < 55, `${shown} labels`);
  const all26 = chartSvg({ labels: labels.slice(0, 26), series: [{ id: 1, name: "x", values: Array(26).fill(0.5) }] });
  assert.equal([...all26.matchAll(/class="sm-chart-label"/g)].length, 26);
});

test("history rows: models by short name, α/β as sliders or block lists", () => {
  const e = { models: { a: "sd15/model_a.safetensors", b: "b.ckpt" }, mode: "weight_sum", calcmode: "normal",
    alpha: 0.5, beta: 0.25, weights_alpha: null, weights_beta: null };
  assert.equal(modelsText(e), "model_a × b");
  assert.equal(weightsText(e), "α 0.5");
  assert.equal(weightsText({ ...e, mode: "triple_sum" }), "α 0.5 · β 0.25");
  assert.equal(weightsText({ ...e, weights_alpha: "GRAD_V", weights_beta: "0,1" }), "α blocks GRAD_V · β blocks 0,1");
});
