// Unit tests of web/js/weights.js: the node's text ↔ slider values for every family and preset, group
// helpers, the SDXL conversions, and how a workflow saved before the panel existed is read.
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { test } from "node:test";

import * as W from "../../../web/js/weights.js";

const ROOT = new URL("../../../", import.meta.url);
const data = JSON.parse(readFileSync(new URL("tests/web/fixtures/editor.json", ROOT), "utf8"));
const presets = data.presets;
const fam = (name) => W.familyTable(data, name);

// The presets file itself, read here without the engine: an independent source for preset values.
const tsv = Object.fromEntries(readFileSync(new URL("block_presets/mbw_presets.tsv", ROOT), "utf8").split(/\r?\n/)
  .filter((l) => l.includes("\t") && !l.startsWith("preset_name")).map((l) => {
    const i = l.indexOf("\t");
    return [l.slice(0, i).trim(), l.slice(i + 1).trim()];
  }));

const range = (n, from = 0) => Array.from({ length: n }, (_, i) => String(i + from));

test("every family: a list of each accepted length reads back to the same values", () => {
  const expected = { sd1: [26], sd2: [26], sdxl: [20, 26, 110], flux: [61] };
  for (const name of Object.keys(data.families)) {
    const f = fam(name);
    assert.deepEqual(f.weight_counts, expected[name]);
    for (const n of f.weight_counts) {
      const tokens = range(n).map((i) => `0.${i.padStart(3, "0")}`);
      const r = W.readList(W.writeList(tokens), W.NO_PRESET, f, presets);
      assert.equal(r.status, "ok", `${name} ${n}: ${r.message}`);
      assert.equal(r.count, n);
      if (n === 26 && name === "sdxl") continue; // converted, below
      assert.deepEqual(r.tokens, tokens);
      assert.equal(r.layout, n === 110 ? "fine" : "coarse");
      assert.equal(r.tokens.length, W.layoutBlocks(f, r.layout).length);
    }
  }
});

test("a list of the wrong length is an error naming the family and the lengths it takes", () => {
  const r = W.readList(W.writeList(range(20)), W.NO_PRESET, fam("sd1"), presets);
  assert.equal(r.status, "error");
  assert.match(r.message, /Stable Diffusion 1\.x takes 26 block weights \(BASE first\); got 20/);
  const x = W.readList(W.writeList(range(61)), W.NO_PRESET, fam("sdxl"), presets);
  assert.match(x.message, /SDXL takes 20, 26 or 110 block weights/);
  assert.match(W.readList("1,2", W.NO_PRESET, fam("flux"), presets).message, /Flux takes 61/);
});

test("SDXL reads an SD list as SuperMerger converts it: IN00–IN08, M00, OUT00–OUT08 (SPEC §4.3 oracle)", () => {
  // weighttoxl([1..25]) = [1..9, 13..22]; here BASE is 0 and the 25 block values are 1..25.
  const r = W.readList(range(26).join(","), W.NO_PRESET, fam("sdxl"), presets);
  assert.equal(r.status, "ok");
  assert.equal(r.converted, true);
  assert.deepEqual(r.tokens.map(Number), [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22]);
  assert.deepEqual(fam("sdxl").blocks.slice(10, 12), ["M00", "OUT00"]);
});

test("text is read as the engine reads it: spaces and new lines around values, any float syntax", () => {
  const text = ` 0,\n1., .5 ,1e-1,+0.25,-1E+0,${range(20).join(",")}`;
  const r = W.readList(text, W.NO_PRESET, fam("sd1"), presets);
  assert.equal(r.status, "ok");
  assert.deepEqual(r.tokens.slice(0, 6).map(Number), [0, 1, 0.5, 0.1, 0.25, -1]);
});

test("tokens the engine refuses are errors with the value's position", () => {
  const f = fam("sd1");
  const with_ = (t) => W.writeList([...range(25).map(() => "0"), t]);
  assert.match(W.readList(with_("R"), W.NO_PRESET, f, presets).message, /value 26 is the random token 'R'/);
  for (const bad of ["0x1", "", "1_0", "nan", "inf", "1,5"]) {
    const r = W.readList(with_(bad), W.NO_PRESET, f, presets);
    assert.equal(r.status, "error", bad);
  }
  assert.match(W.readList("0.5", W.NO_PRESET, f, presets).message, /a single number '0.5' is not a block-weight list/);
  assert.match(W.readList("NO_SUCH", W.NO_PRESET, f, presets).message, /unknown preset 'NO_SUCH'/);
  assert.equal(W.readList("  \n ", W.NO_PRESET, f, presets).status, "empty");
});

test("every numeric preset reads for SD1 as written and for SDXL as its 20 kept values; random ones are not offered", () => {
  const numeric = presets.filter((p) => !p.random);
  assert.ok(numeric.length >= 35);
  assert.deepEqual(presets.map((p) => p.name), Object.keys(tsv));
  for (const p of numeric) {
    assert.equal(p.text, tsv[p.name]);
    const sd = W.presetTokens(p, fam("sd1"));
    assert.deepEqual(sd.tokens, tsv[p.name].split(",").map((t) => t.trim()));
    const xl = W.presetTokens(p, fam("sdxl"));
    assert.equal(xl.tokens.length, 20);
    assert.deepEqual(xl.tokens, [...sd.tokens.slice(0, 10), ...sd.tokens.slice(13, 23)]);
  }
  assert.deepEqual(presets.filter((p) => p.random).map((p) => p.name), ["ALL_R", "ALL_U", "ALL_X"]);
  for (const name of ["sd1", "sdxl"]) {
    assert.deepEqual(W.presetsFor(fam(name), presets).map((p) => p.name), numeric.map((p) => p.name));
  }
  assert.deepEqual(W.presetsFor(fam("flux"), presets), []); // no 61-value presets ship
});

test("a preset name in the text, and the node's preset box, which wins over the text", () => {
  const f = fam("sd1");
  const byName = W.readList("GRAD_V", W.NO_PRESET, f, presets);
  assert.equal(byName.source, "preset-name");
  assert.equal(byName.preset, "GRAD_V");
  assert.deepEqual(byName.tokens, tsv.GRAD_V.split(","));
  const box = W.readList(W.writeList(range(26)), "GRAD_A", f, presets);
  assert.equal(box.source, "preset-box");
  assert.deepEqual(box.tokens, tsv.GRAD_A.split(","));
  assert.match(W.readList("", "NOT_THERE", f, presets).message, /preset 'NOT_THERE' is not in the pack's presets/);
});

test("workflows saved before the panel existed open in it (the pack's own templates)", () => {
  const order = {
    SuperMergerBlockWeights: ["weights_alpha", "preset_alpha", "weights_beta", "preset_beta"],
    SuperMergerCheckpointMerge: ["model_a", "model_b", "model_c", "mode", "calcmode", "alpha", "beta", "gamma",
      "weights_alpha", "weights_beta"],
  };
  const seen = [];
  for (const file of ["block_weights_preset.json", "similarity_chart.json", "checkpoint_merge_save.json"]) {
    const wf = JSON.parse(readFileSync(new URL(`example_workflows/${file}`, ROOT), "utf8"));
    for (const node of wf.nodes.filter((n) => order[n.type])) {
      const v = Object.fromEntries(order[node.type].map((name, i) => [name, node.widgets_values[i]]));
      const alpha = W.readList(v.weights_alpha, v.preset_alpha ?? W.NO_PRESET, fam("sd1"), presets);
      const beta = W.readList(v.weights_beta, v.preset_beta ?? W.NO_PRESET, fam("sd1"), presets);
      assert.equal(alpha.status, "ok", `${file}: ${alpha.message}`);
      assert.equal(beta.status, "empty");
      seen.push([file, alpha.source, alpha.preset]);
    }
  }
  assert.deepEqual(seen, [["block_weights_preset.json", "preset-box", "GRAD_V"],
    ["similarity_chart.json", "preset-box", "GRAD_A"], ["checkpoint_merge_save.json", "preset-name", "GRAD_V"]]);
});

test("set / add / multiply change only the chosen blocks; the others keep their text exactly", () => {
  const tokens = W.presetTokens(presets.find((p) => p.name === "SMOOTHSTEP"), fam("sd1")).tokens;
  const out = W.applyOp(tokens, [1, 2], "mul", 0.5);
  assert.deepEqual(out.slice(3), tokens.slice(3));
  assert.equal(out[2], W.formatNumber(Number(tokens[2]) / 2));
  assert.deepEqual(W.applyOp(["0.1", "0.2"], [0, 1], "add", 0.2), ["0.3", "0.4"]);
  assert.deepEqual(W.applyOp(["0.1", "0.2"], [1], "set", "1"), ["0.1", "1"]);
  assert.throws(() => W.applyOp(["0"], [0], "pow", 2), /unknown operation/);
  assert.throws(() => W.applyOp(["0"], [0], "set", ""), /is not a number/);
  assert.throws(() => W.applyOp(["0"], [0], "set", "abc"), /is not a number/);
});

test("numbers are written short and exact enough: 6 decimals, no -0", () => {
  assert.equal(W.formatNumber(0.1 + 0.2), "0.3");
  assert.equal(W.formatNumber(-0), "0");
  assert.equal(W.formatNumber(-1e-9), "0");
  assert.equal(W.formatNumber(0.1234567), "0.123457");
  assert.equal(W.formatNumber(2), "2");
});

test("groups: BASE, IN, MID, OUT for SD and SDXL (also over the 110 fine blocks), five groups for Flux", () => {
  const sd = fam("sd1");
  assert.deepEqual(W.groupIndices(sd, "coarse", "BASE"), [0]);
  assert.deepEqual(W.groupIndices(sd, "coarse", "IN"), range(12, 1).map(Number));
  assert.deepEqual(W.groupIndices(sd, "coarse", "MID"), [13]);
  assert.deepEqual(W.groupIndices(sd, "coarse", "OUT"), range(12, 14).map(Number));
  assert.equal(W.groupIndices(sd, "coarse", "ALL").length, 26);
  const xl = fam("sdxl");
  assert.deepEqual(W.groupIndices(xl, "coarse", "OUT"), range(9, 11).map(Number));
  const fine = Object.fromEntries(W.groupsFor(xl).map((g) => [g, W.groupIndices(xl, "fine", g).length]));
  assert.deepEqual(fine, { BASE: 3, IN: 38 + 2, MID: 13, OUT: 54 }); // IN: IN0…IN819 plus TIME and LABEL
  const flux = fam("flux");
  const fl = Object.fromEntries(W.groupsFor(flux).map((g) => [g, W.groupIndices(flux, "coarse", g).length]));
  assert.deepEqual(fl, { BASE: 2, IN: 1, DOUBLE: 19, SINGLE: 38, OUT: 1 });
});

test("SDXL 20 ↔ 110: each fine block takes its block's value; back, a block takes its blocks' common value or mean", () => {
  const xl = fam("sdxl");
  const coarse = range(20).map((i) => String(i / 10));
  const fine = W.fineFromCoarse(xl, coarse);
  assert.equal(fine.length, 110);
  assert.equal(fine[xl.extended.indexOf("IN411")], coarse[xl.blocks.indexOf("IN04")]);
  assert.equal(fine[xl.extended.indexOf("OUT9")], coarse[xl.blocks.indexOf("OUT08")]);
  assert.equal(fine[xl.extended.indexOf("TIME")], coarse[xl.blocks.indexOf("IN00")]);
  assert.deepEqual(W.coarseFromFine(xl, fine), coarse);
  const members = W.fineMembers(xl, "OUT05"); // OUT50 OUT51 OUT510 OUT511 OUT52
  assert.deepEqual(members.map((i) => xl.extended[i]), ["OUT50", "OUT51", "OUT510", "OUT511", "OUT52"]);
  const uneven = W.applyOp(fine, [members[0]], "set", 1.5);
  assert.equal(W.coarseFromFine(xl, uneven)[xl.blocks.indexOf("OUT05")], W.formatNumber((1.5 + 4 * Number(coarse[16])) / 5));
});

test("slider columns: every block once; SD mirrors the U-Net (IN00 beside OUT11)", () => {
  for (const name of Object.keys(data.families)) {
    const f = fam(name);
    assert.deepEqual(W.columns(f).flat().sort(), [...f.blocks].sort(), name);
  }
  const [ins, outs] = W.columns(fam("sd1"));
  assert.deepEqual([ins[0], outs[0], ins[1], outs[1], ins[12], outs[12]], ["BASE", "M00", "IN00", "OUT11", "IN11", "OUT00"]);
  const groups = W.fineGroups(fam("sdxl"));
  assert.equal(groups.flatMap((g) => g.names).length, 110);
  assert.deepEqual(groups.find((g) => g.block === "BASE").names, ["CLIPL", "CLIPG", "VAE"]);
});

test("paste takes a whole list of a length the family takes, or a preset name", () => {
  const sd = fam("sd1");
  assert.deepEqual(W.parsePaste(range(26).join(","), sd, presets).tokens, range(26));
  assert.deepEqual(W.parsePaste("WRAP08", sd, presets).tokens, tsv.WRAP08.split(","));
  assert.throws(() => W.parsePaste(range(20).join(","), sd, presets), /takes 26/);
  assert.throws(() => W.parsePaste("", sd, presets), /no block weights/);
  assert.equal(W.parsePaste(range(110).join(","), fam("sdxl"), presets).layout, "fine");
});

test("the family a bare list length suggests", () => {
  assert.deepEqual([26, 20, 110, 61, 25].map(W.familyForCount), ["sd1", "sdxl", "sdxl", "flux", null]);
});
