// Block-weight lists as the panel sees them: the node's text ↔ one value per block, presets, group edits.
// Pure (no DOM, no ComfyUI): the text widget stays the one source of truth, and everything here maps it to
// slider values and back. Family tables come from the pack's /supermerger/editor route (merge_core/editor.py),
// so block names, list lengths and the SDXL conversions are described once, in the engine.

export const NO_PRESET = "(none)";
const NUMBER = /^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$/; // what Python's float() takes, minus inf/nan/_
const RANDOM = new Set(["R", "U", "X", "D", "ER", "EU", "EX"]);

/** The comma-separated tokens of a list, trimmed as the engine trims them ([] for a blank text). */
export function tokenize(text) {
  const t = String(text ?? "").trim();
  return t ? t.split(",").map((s) => s.trim()) : [];
}

export function isNumberToken(token) {
  return NUMBER.test(token);
}

/** A number as the panel writes it: at most 6 decimals, no trailing zeros, never "-0". */
export function formatNumber(x) {
  const r = Math.round(Number(x) * 1e6) / 1e6;
  return Object.is(r, -0) || r === 0 ? "0" : String(r);
}

/** The family a list of `count` values belongs to when nothing else tells (26 is SD1/SD2's). */
export function familyForCount(count) {
  return { 26: "sd1", 20: "sdxl", 110: "sdxl", 61: "flux" }[count] ?? null;
}

/** One family's table from the editor data, with its name. */
export function familyTable(data, name) {
  const t = data.families[name];
  if (!t) throw new Error(`unknown family ${name}`);
  return { name, ...t };
}

export function layoutBlocks(family, layout) {
  return layout === "fine" ? family.extended : family.blocks;
}

function countsText(family) {
  const c = family.weight_counts;
  return c.length === 1 ? `${c[0]}` : `${c.slice(0, -1).join(", ")} or ${c[c.length - 1]}`;
}

/** The presets the panel offers for a family: numeric ones whose length the family takes. */
export function presetsFor(family, presets) {
  return presets.filter((p) => !p.random && family.weight_counts.includes(p.count));
}

function presetNamed(presets, name) {
  return presets.find((p) => p.name === name) ?? null;
}

/**
 * What the panel shows for one list (α or β) of a node: the node's text, or the preset chosen in the node's
 * preset box, which wins over the text as the node itself decides (nodes/params.py block_weights).
 *
 * Returns {status: "empty" | "ok" | "error", source: "text" | "preset-name" | "preset-box", preset, layout:
 * "coarse" | "fine", tokens (one per block of the layout), count (values in the text), converted (an SD list
 * read for SDXL), message}.
 */
export function readList(text, presetChoice, family, presets) {
  let source = "text";
  let preset = null;
  let body = String(text ?? "").trim();
  if (presetChoice && presetChoice !== NO_PRESET) {
    source = "preset-box";
    preset = presetChoice;
    const p = presetNamed(presets, presetChoice);
    if (!p) return error(source, preset, `preset '${presetChoice}' is not in the pack's presets`);
    body = p.text;
  } else if (body && !body.includes(",")) {
    const p = presetNamed(presets, body);
    if (!p) {
      const why = isNumberToken(body) ? `a single number '${body}' is not a block-weight list`
        : `unknown preset '${body}'`;
      return error(source, null, why);
    }
    source = "preset-name";
    preset = body;
    body = p.text;
  }
  if (!body) return { status: "empty", source, preset, layout: "coarse", tokens: [], count: 0, converted: false,
    message: "" };
  const tokens = tokenize(body);
  for (const [i, t] of tokens.entries()) {
    if (RANDOM.has(t.toUpperCase()))
      return error(source, preset, `value ${i + 1} is the random token '${t}': random weights need the Dice Roll node`);
    if (!isNumberToken(t)) return error(source, preset, `value ${i + 1} ('${t}') is not a number`);
  }
  const n = tokens.length;
  if (!family.weight_counts.includes(n))
    return error(source, preset, `${family.label} takes ${countsText(family)} block weights (BASE first); got ${n}`);
  const base = { status: "ok", source, preset, count: n, converted: false, message: "" };
  if (family.extended && n === family.extended.length) return { ...base, layout: "fine", tokens };
  if (family.from_sd26 && n === 26 && n !== family.blocks.length)
    return { ...base, layout: "coarse", tokens: family.from_sd26.map((i) => tokens[i]), converted: true };
  return { ...base, layout: "coarse", tokens };
}

function error(source, preset, message) {
  return { status: "error", source, preset, layout: "coarse", tokens: [], count: 0, converted: false, message };
}

/** The text the node stores for a list of tokens. */
export function writeList(tokens) {
  return tokens.join(",");
}

/** `count` blocks all at `value`. */
export function blankTokens(family, layout, value) {
  return layoutBlocks(family, layout).map(() => formatNumber(value));
}

/** A preset's tokens for a family's coarse layout (SDXL keeps 20 of an SD preset's 26, as SuperMerger's "set"). */
export function presetTokens(preset, family) {
  const r = readList(preset.text, NO_PRESET, family, []);
  if (r.status !== "ok") throw new Error(r.message);
  return { layout: r.layout, tokens: r.tokens };
}

/** Set / add / multiply the tokens at `indices`; the other tokens are kept exactly as written. */
export function applyOp(tokens, indices, op, operand) {
  const v = Number(operand);
  if (String(operand).trim() === "" || !Number.isFinite(v)) throw new Error(`'${operand}' is not a number`);
  const f = { set: () => v, add: (x) => x + v, mul: (x) => x * v }[op];
  if (!f) throw new Error(`unknown operation ${op}`);
  const out = tokens.slice();
  for (const i of indices) out[i] = formatNumber(f(Number(out[i])));
  return out;
}

/** The group helpers a family offers, besides ALL and the selection. */
export function groupsFor(family) {
  return family.name === "flux" ? ["BASE", "IN", "DOUBLE", "SINGLE", "OUT"] : ["BASE", "IN", "MID", "OUT"];
}

/** The group of a block name (a 110-list fine name is grouped by its 20-list block). */
export function groupOf(family, name, layout = "coarse") {
  const coarse = layout === "fine" ? family.fine_coarse[name] : name;
  if (family.name === "flux") {
    if (coarse === "CLIP" || coarse === "T5") return "BASE";
    if (coarse === "IN" || coarse === "OUT") return coarse;
    return coarse.startsWith("D") ? "DOUBLE" : "SINGLE";
  }
  if (coarse === "BASE") return "BASE";
  if (coarse === "M00") return "MID";
  return coarse.startsWith("IN") ? "IN" : "OUT";
}

/** Indices (in the layout's list) of a group's blocks; "ALL" is every block. */
export function groupIndices(family, layout, group) {
  const names = layoutBlocks(family, layout);
  return names.flatMap((n, i) => (group === "ALL" || groupOf(family, n, layout) === group ? [i] : []));
}

/** Indices in the fine (110) list of the fine blocks of one 20-list block. */
export function fineMembers(family, coarseName) {
  return family.extended.flatMap((n, i) => (family.fine_coarse[n] === coarseName ? [i] : []));
}

/** A 20-list as a 110-list: every fine block takes its block's value. */
export function fineFromCoarse(family, coarseTokens) {
  return family.extended.map((n) => coarseTokens[family.blocks.indexOf(family.fine_coarse[n])]);
}

/** A 110-list as a 20-list: a block's value is its fine blocks' common value, or their mean. */
export function coarseFromFine(family, fineTokens) {
  return family.blocks.map((b) => {
    const members = fineMembers(family, b).map((i) => fineTokens[i]);
    if (members.every((t) => Number(t) === Number(members[0]))) return members[0];
    return formatNumber(members.reduce((s, t) => s + Number(t), 0) / members.length);
  });
}

/**
 * Columns of block names for the slider grid. SD and SDXL mirror the U-Net as SuperMerger lays it out:
 * BASE over the IN blocks, M00 over the OUT blocks from the deepest up, so IN00 sits beside OUT11 (its skip
 * connection). Flux: text encoders, in/out and the double blocks, then the single blocks in two columns.
 */
export function columns(family) {
  const b = family.blocks;
  if (family.name === "flux") {
    const singles = b.filter((n) => n.startsWith("S"));
    const half = Math.ceil(singles.length / 2);
    return [["CLIP", "T5", "IN", "OUT", ...b.filter((n) => n.startsWith("D"))], singles.slice(0, half),
      singles.slice(half)];
  }
  const ins = b.filter((n) => n.startsWith("IN"));
  const outs = b.filter((n) => n.startsWith("OUT")).reverse();
  return [["BASE", ...ins], ["M00", ...outs]];
}

/** The 110 fine blocks grouped under their 20-list block, in list order. */
export function fineGroups(family) {
  return family.blocks.map((b) => ({ block: b, names: fineMembers(family, b).map((i) => family.extended[i]) }));
}

/** A pasted or typed list checked for a family: {tokens, layout} to write, or an Error. */
export function parsePaste(text, family, presets) {
  const r = readList(text, NO_PRESET, family, presets);
  if (r.status === "error") throw new Error(r.message);
  if (r.status === "empty") throw new Error("the clipboard holds no block weights");
  return { tokens: r.tokens, layout: r.layout };
}
