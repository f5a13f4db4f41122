// The block-weight slider panel: one DOM element shown as a node widget, reading and writing the node's own
// text widgets (weights_alpha / weights_beta and, on Block Weights, the preset boxes). The texts stay the only
// saved state; the panel is rebuilt from them whenever they change (typing, loading, undo).
import * as W from "./weights.js";
import { modelFileFor, sliderValue, widgetOf } from "./graph.js";
import { familyOfFile } from "./api.js";
import { h } from "./dom.js";

const FAMILY_CHOICES = [["auto", "auto"], ["sd1", "SD 1.x"], ["sd2", "SD 2.x"], ["sdxl", "SDXL"], ["flux", "Flux"]];
const OPS = [["set", "set"], ["add", "add"], ["mul", "×"]];
const SLIDER = { min: 0, max: 1, step: 0.01 };
const MIN_WIDTH = { flux: 620, fine: 740, default: 470 };
let clipboard = ""; // panels share it when the system clipboard cannot be read

export class BlockWeightPanel {
  /**
   * `lists`: [{key: "alpha", label: "α", text: widget name, preset: widget name or undefined}];
   * `data`: the editor data; `hooks`: {recordUndo(), resized(panel), canvasDirty()}.
   */
  constructor(node, lists, data, hooks) {
    this.node = node;
    this.lists = lists;
    this.data = data;
    this.hooks = hooks;
    this.active = lists[0].key;
    this.selection = new Set(); // "c:NAME" (20/26-list block) or "f:NAME" (SDXL fine block)
    this.anchor = null;
    this.fineOpen = false;
    this.tool = { group: "ALL", op: "set", value: "0.5" };
    this.auto = { key: null, family: null, file: null, reason: "" };
    this.structure = "";
    this.el = h("div", { class: "sm-panel" });
    this.el.addEventListener("keydown", (e) => e.stopPropagation()); // typing here is not a canvas shortcut
    this.render();
  }

  // ------------------------------------------------------------------ state read from the node

  get presets() {
    return this.data.presets;
  }

  spec(key = this.active) {
    return this.lists.find((l) => l.key === key);
  }

  familyChoice() {
    return this.node.properties?.sm_family ?? "auto";
  }

  /** {table, how}: the family chosen on the panel, else the model file's, else the list length's. */
  family() {
    const choice = this.familyChoice();
    if (choice !== "auto" && this.data.families[choice]) return { table: W.familyTable(this.data, choice), how: "chosen" };
    if (this.auto.family) return { table: W.familyTable(this.data, this.auto.family), how: "file" };
    for (const l of this.lists) {
      const text = widgetOf(this.node, l.text)?.value ?? "";
      const byCount = W.familyForCount(W.tokenize(text).length);
      if (text.includes(",") && byCount) return { table: W.familyTable(this.data, byCount), how: "count" };
    }
    return { table: W.familyTable(this.data, "sd1"), how: "default" };
  }

  linked(spec) {
    return (this.node.inputs ?? []).some((i) => i.name === spec.text && i.link != null);
  }

  read(spec, family) {
    const text = widgetOf(this.node, spec.text)?.value ?? "";
    const preset = spec.preset ? widgetOf(this.node, spec.preset)?.value : W.NO_PRESET;
    return W.readList(text, preset, family, this.presets);
  }

  /** The list as the panel edits it: its tokens, or the merge's slider value for every block when empty. */
  editable(spec, family, r) {
    if (r.status === "ok") return { layout: r.layout, tokens: r.tokens };
    if (r.status === "empty") return { layout: "coarse", tokens: W.blankTokens(family, "coarse", sliderValue(this.node, spec.key)) };
    return null;
  }

  /** Coarse and fine tokens for display, whatever layout the list is in. */
  views(family, base) {
    if (!base) return { coarse: null, fine: null };
    if (base.layout === "fine") return { coarse: W.coarseFromFine(family, base.tokens), fine: base.tokens };
    return { coarse: base.tokens, fine: family.extended ? W.fineFromCoarse(family, base.tokens) : null };
  }

  // ------------------------------------------------------------------ writing

  write(spec, tokens) {
    const text = widgetOf(this.node, spec.text);
    text.value = W.writeList(tokens);
    const preset = spec.preset ? widgetOf(this.node, spec.preset) : null;
    if (preset && preset.value !== W.NO_PRESET) preset.value = W.NO_PRESET;
    this.hooks.canvasDirty();
    this.sync();
  }

  /** Apply `change(base)` → {layout, tokens} to the active list; `force` starts a broken list afresh. */
  edit(change, { undo = true, force = false } = {}) {
    const spec = this.spec();
    if (this.linked(spec)) return;
    const { table } = this.family();
    const r = this.read(spec, table);
    let base = this.editable(spec, table, r);
    if (!base && force) base = { layout: "coarse", tokens: W.blankTokens(table, "coarse", 0) };
    if (!base) return;
    try {
      const next = change(base, table);
      if (!next) return;
      this.write(spec, next.tokens);
      if (undo) this.hooks.recordUndo();
    } catch (e) {
      this.flash(e.message, true);
    }
  }

  setBlock(kind, name, value, undo) {
    const v = Number(value);
    if (String(value).trim() === "" || !Number.isFinite(v)) return this.sync();
    this.edit((base, f) => {
      if (kind === "f") {
        const fine = base.layout === "fine" ? base.tokens : W.fineFromCoarse(f, base.tokens);
        return { layout: "fine", tokens: W.applyOp(fine, [f.extended.indexOf(name)], "set", v) };
      }
      const idx = base.layout === "fine" ? W.fineMembers(f, name) : [f.blocks.indexOf(name)];
      return { layout: base.layout, tokens: W.applyOp(base.tokens, idx, "set", v) };
    }, { undo });
  }

  applyTool() {
    const { group, op, value } = this.tool;
    this.edit((base, f) => {
      let { layout, tokens } = base;
      let idx;
      if (group === "SEL") {
        const sel = [...this.selection];
        if (!sel.length) throw new Error("select blocks first: click their names (shift-click for a range)");
        if (layout === "coarse" && sel.some((s) => s.startsWith("f:"))) {
          layout = "fine";
          tokens = W.fineFromCoarse(f, tokens);
        }
        idx = [...new Set(sel.flatMap((s) => {
          const name = s.slice(2);
          if (s.startsWith("f:")) return [f.extended.indexOf(name)];
          return layout === "fine" ? W.fineMembers(f, name) : [f.blocks.indexOf(name)];
        }))];
      } else {
        idx = W.groupIndices(f, layout, group);
      }
      return { layout, tokens: W.applyOp(tokens, idx, op, value) };
    }, { force: group === "ALL" && op === "set" });
  }

  pickPreset(name) {
    const p = this.presets.find((x) => x.name === name);
    if (!p) return;
    this.edit((_base, f) => W.presetTokens(p, f), { force: true });
  }

  toFine(on) {
    this.edit((base, f) => {
      if (on && base.layout === "coarse") return { layout: "fine", tokens: W.fineFromCoarse(f, base.tokens) };
      if (!on && base.layout === "fine") return { layout: "coarse", tokens: W.coarseFromFine(f, base.tokens) };
      return null;
    });
  }

  async copy() {
    const { table } = this.family();
    const r = this.read(this.spec(), table);
    if (r.status !== "ok") return this.flash(r.status === "empty" ? "nothing to copy: the list is empty" : r.message, true);
    clipboard = W.writeList(r.tokens);
    try {
      await navigator.clipboard.writeText(clipboard);
    } catch {
      /* the panels' own clipboard still holds it */
    }
    this.flash(`copied ${r.tokens.length} values`);
  }

  async paste() {
    let text = "";
    try {
      text = await navigator.clipboard.readText();
    } catch {
      text = "";
    }
    text = text.trim() || clipboard;
    this.edit((_base, f) => W.parsePaste(text, f, this.presets), { force: true });
  }

  clear() {
    const spec = this.spec();
    if (this.linked(spec)) return;
    const text = widgetOf(this.node, spec.text);
    text.value = "";
    const preset = spec.preset ? widgetOf(this.node, spec.preset) : null;
    if (preset) preset.value = W.NO_PRESET;
    this.hooks.canvasDirty();
    this.sync();
    this.hooks.recordUndo();
  }

  setFamily(choice) {
    this.node.properties ??= {};
    this.node.properties.sm_family = choice;
    this.hooks.recordUndo();
    this.sync();
  }

  toggleSelect(key, range, order) {
    if (range && this.anchor && order.includes(this.anchor)) {
      const [a, b] = [order.indexOf(this.anchor), order.indexOf(key)].sort((x, y) => x - y);
      for (const k of order.slice(a, b + 1)) this.selection.add(k);
    } else if (this.selection.has(key)) this.selection.delete(key);
    else this.selection.add(key);
    this.anchor = key;
    this.tool.group = this.selection.size ? "SEL" : this.tool.group === "SEL" ? "ALL" : this.tool.group;
    this.render();
  }

  /** A message in the note line for a few seconds (copied, a paste that did not fit, …). */
  flash(text, isError = false) {
    const note = this.el.querySelector(".sm-note");
    if (!note) return;
    note.title = note.textContent = text;
    note.classList.add(isError ? "sm-error" : "sm-flash");
    clearTimeout(this.flashTimer);
    this.flashTimer = setTimeout(() => this.updateValues(), 4000);
  }

  // ------------------------------------------------------------------ keeping in step with the node

  /** Look up model A's family again when the graph names another file (cheap when nothing changed). */
  async detect() {
    const file = modelFileFor(this.node);
    const key = file ? `${file.folder}/${file.name}` : null;
    if (key === this.auto.key) return;
    this.auto = { key, family: null, file, reason: "" };
    if (file) {
      const res = await familyOfFile(file);
      if (this.auto.key !== key) return;
      this.auto = { key, family: res.family, file, reason: res.reason ?? "" };
    }
    this.sync();
  }

  structureKey() {
    const { table, how } = this.family();
    const spec = this.spec();
    const r = this.read(spec, table);
    return JSON.stringify([table.name, how, this.auto.file?.name, this.active, r.status, r.layout, r.source, r.preset,
      r.converted, r.message, this.linked(spec), this.fineOpen,
      this.lists.map((l) => this.read(l, table).status)]);
  }

  /** Re-read the node: rebuild when the shape of what is shown changed, else only move values. */
  sync() {
    if (this.structureKey() !== this.structure) this.render();
    else this.updateValues();
  }

  // ------------------------------------------------------------------ DOM

  minWidth() {
    if (this.fineOpen && this.family().table.extended) return MIN_WIDTH.fine;
    return MIN_WIDTH[this.family().table.name] ?? MIN_WIDTH.default;
  }

  render() {
    this.structure = this.structureKey();
    const { table, how } = this.family();
    const spec = this.spec();
    const r = this.read(spec, table);
    const linked = this.linked(spec);
    const base = this.editable(spec, table, r);
    const views = this.views(table, base);
    const dim = r.status === "empty";
    const disabled = linked || r.status === "error";

    const tabs = h("div", { class: "sm-tabs", role: "tablist" }, this.lists.map((l) => {
      const st = this.read(l, table).status;
      return h("button", { class: `sm-tab${l.key === this.active ? " sm-on" : ""}`, type: "button", role: "tab",
        "data-list": l.key, title: `Edit the ${l.label} block weights (${l.text})`,
        onclick: () => { this.active = l.key; this.render(); } },
      `${l.label} weights`, st === "ok" ? h("span", { class: "sm-dot" }) : st === "error" ? h("span", { class: "sm-dot sm-bad" }) : null);
    }));
    const familySelect = h("select", { class: "sm-family", title: "Model family: auto reads model A's file header",
      onchange: (e) => this.setFamily(e.target.value) },
    FAMILY_CHOICES.map(([v, label]) => h("option", { value: v, selected: v === this.familyChoice() },
      v === "auto" ? `auto: ${table.label.replace("Stable Diffusion", "SD")}` : label)));
    const source = how === "file" ? `from ${this.auto.file.name}` : how === "count" ? "from the list length"
      : how === "default" ? (this.auto.reason || "no model file found") : "";
    const head = h("div", { class: "sm-head" }, tabs, h("div", { class: "sm-famwrap" }, familySelect,
      source ? h("span", { class: "sm-source", title: source }, source) : null));

    const offered = W.presetsFor(table, this.presets);
    const current = base ? this.matchingPreset(table, base, offered) : null;
    const presetSelect = h("select", { class: "sm-preset", title: "Fill the list from a preset (block_presets/)",
      disabled: linked, onchange: (e) => { if (e.target.value) this.pickPreset(e.target.value); } },
    h("option", { value: "" }, current ? `preset: ${current}` : "preset…"),
    offered.map((p) => h("option", { value: p.name }, p.name)));
    const btn = (icon, title, onclick, cls = "") => h("button", { class: `sm-btn ${cls}`, type: "button", title,
      disabled: linked, onclick }, h("i", { class: `pi ${icon}` }));
    const bar = h("div", { class: "sm-bar" }, presetSelect,
      btn("pi-copy", "Copy the whole list", () => this.copy(), "sm-copy"),
      btn("pi-clipboard", "Paste a whole list (or a preset name)", () => this.paste(), "sm-paste"),
      btn("pi-eraser", "Empty the list: every block then uses the merge's slider", () => this.clear(), "sm-clear"));

    const noteText = this.noteText(spec, table, r, linked);
    const note = h("div", { class: `sm-note${r.status === "error" ? " sm-error" : ""}`, title: noteText }, noteText);
    const grid = h("div", { class: `sm-grid sm-cols-${W.columns(table).length}${dim ? " sm-dim" : ""}` },
      W.columns(table).map((col) => h("div", { class: "sm-col" },
        col.map((name) => this.row("c", name, views.coarse?.[table.blocks.indexOf(name)], disabled, table)))));

    const parts = [head, bar, note, grid];
    if (table.extended) parts.push(this.fineSection(table, r, views, disabled));
    parts.push(this.tools(table, disabled || r.status === "error"));
    const inner = h("div", { class: "sm-inner" }, parts);
    this.el.replaceChildren(inner);
    this.el.dataset.node = String(this.node.id);
    this.el.dataset.family = table.name;
    this.el.dataset.list = this.active;
    this.observer ??= typeof ResizeObserver === "function"
      ? new ResizeObserver(() => this.measured(this.el.firstElementChild?.offsetHeight ?? 0)) : null;
    this.observer?.disconnect();
    this.observer?.observe(inner);
    this.contentHeight ??= this.estimateHeight(table);
  }

  /** Before the panel is on screen: a lower bound of its height (rows and bars), so that a node opened from a
   * workflow is never grown past its saved size by a guess; the first measurement then grows a new node. */
  estimateHeight(table) {
    return Math.max(...W.columns(table).map((c) => c.length)) * 20 + 90;
  }

  /** The content's height as laid out. The first measurement replaces the estimate without shrinking the
   * node (a node opened from a workflow keeps its saved size); later ones follow what the user opened or
   * closed (fine blocks, another family). */
  measured(px) {
    if (px > 0 && Math.abs(px - this.contentHeight) > 1) {
      const old = this.wasMeasured ? this.contentHeight : null;
      this.contentHeight = px;
      this.wasMeasured = true;
      this.hooks.resized(this, old);
    }
  }

  /** Called on every canvas frame that draws the node: catch changes made outside the panel. */
  tick() {
    if (this.el.dataset.node !== String(this.node.id)) this.el.dataset.node = String(this.node.id);
    const snap = JSON.stringify([this.lists.map((l) => [widgetOf(this.node, l.text)?.value,
      l.preset ? widgetOf(this.node, l.preset)?.value : null, this.linked(l)]), this.familyChoice(),
    (this.node.inputs ?? []).map((i) => i.link)]);
    if (snap !== this.snap) {
      this.snap = snap;
      this.sync();
    }
    // The graph walk is cheap but a frame is not the place for it: at most a few times a second, and once
    // after the last frame (a link drawn, a checkpoint picked on another node).
    this.detectTimer ??= setTimeout(() => {
      this.detectTimer = null;
      this.detect().catch(() => {});
    }, 300);
  }

  destroy() {
    clearTimeout(this.detectTimer);
    clearTimeout(this.flashTimer);
    this.observer?.disconnect();
  }

  matchingPreset(table, base, offered) {
    const same = (a, b) => a.length === b.length && a.every((t, i) => Number(t) === Number(b[i]));
    for (const p of offered) {
      const t = W.presetTokens(p, table);
      if (t.layout === base.layout && same(t.tokens, base.tokens)) return p.name;
    }
    return null;
  }

  noteText(spec, table, r, linked) {
    if (linked) return `${spec.text} is connected to another node: edit it there`;
    if (r.status === "error") return `${spec.text}: ${r.message}. Pick a preset, paste a list or "set ALL" to start again.`;
    const parts = [];
    const chained = (this.node.inputs ?? []).some((i) => i.name === "weights" && i.link != null);
    if (r.status === "empty") parts.push(chained ? `empty: the list from the connected weights input applies, if it has one`
      : `empty: every block uses the merge's ${spec.label} (${sliderValue(this.node, spec.key)})`);
    else parts.push(`${r.count} values; click block names to select them`);
    if (r.source === "preset-box") parts.push(`the ${spec.preset} box (${r.preset}) wins over the text; an edit takes it over`);
    if (r.source === "preset-name") parts.push(`preset ${r.preset}`);
    if (r.converted) parts.push("an SD list: SDXL keeps IN00–IN08, M00, OUT00–OUT08");
    if (r.layout === "fine") parts[0] = `${r.count} values: one per fine block`;
    return parts.join(" · ");
  }

  row(kind, name, token, disabled, table) {
    const key = `${kind}:${name}`;
    const v = token === undefined || token === null ? NaN : Number(token);
    const slider = h("input", { class: "sm-slider", type: "range", min: SLIDER.min, max: SLIDER.max, step: SLIDER.step,
      disabled, "aria-label": `${name} weight`,
      oninput: (e) => this.setBlock(kind, name, e.target.value, false),
      onchange: () => this.hooks.recordUndo() });
    const box = h("input", { class: "sm-num", type: "number", step: 0.01, disabled, "aria-label": `${name} value`,
      onchange: (e) => this.setBlock(kind, name, e.target.value, true) });
    const label = h("span", { class: "sm-label", title: `${name}: click to select, shift-click for a range`,
      onclick: (e) => this.toggleSelect(key, e.shiftKey, this.selectionOrder(kind, table)) }, name);
    const group = W.groupOf(table, name, kind === "f" ? "fine" : "coarse");
    const el = h("div", { class: `sm-row sm-g-${group}${this.selection.has(key) ? " sm-sel" : ""}`, "data-block": name,
      "data-kind": kind },
      label, slider, box);
    this.setRow(el, v);
    return el;
  }

  selectionOrder(kind, table) {
    return kind === "f" ? table.extended.map((n) => `f:${n}`) : W.columns(table).flat().map((n) => `c:${n}`);
  }

  setRow(el, v) {
    const slider = el.querySelector(".sm-slider");
    const box = el.querySelector(".sm-num");
    const known = Number.isFinite(v);
    const clamped = known ? Math.min(SLIDER.max, Math.max(SLIDER.min, v)) : 0;
    if (Number(slider.value) !== clamped) slider.value = String(clamped);
    slider.style.setProperty("--p", `${(clamped - SLIDER.min) / (SLIDER.max - SLIDER.min) * 100}%`);
    if (document.activeElement !== box) box.value = known ? String(Math.round(v * 1000) / 1000) : "";
    box.title = known ? W.formatNumber(v) : "";
    el.classList.toggle("sm-out", known && (v < SLIDER.min || v > SLIDER.max));
  }

  /** Move every shown slider and box to the node's current values (no rebuild: a drag goes on). */
  updateValues() {
    const { table } = this.family();
    const spec = this.spec();
    const r = this.read(spec, table);
    const views = this.views(table, this.editable(spec, table, r));
    for (const el of this.el.querySelectorAll(".sm-row")) {
      const name = el.dataset.block;
      const list = el.dataset.kind === "f" ? views.fine : views.coarse;
      const names = el.dataset.kind === "f" ? table.extended : table.blocks;
      this.setRow(el, list ? Number(list[names.indexOf(name)]) : NaN);
    }
    const sel = this.el.querySelector(".sm-preset option[value='']");
    const base = this.editable(spec, table, r);
    const current = base ? this.matchingPreset(table, base, W.presetsFor(table, this.presets)) : null;
    if (sel) sel.textContent = current ? `preset: ${current}` : "preset…";
    const note = this.el.querySelector(".sm-note");
    if (note) {
      note.title = note.textContent = this.noteText(spec, table, r, this.linked(spec));
      note.className = `sm-note${r.status === "error" ? " sm-error" : ""}`;
    }
  }

  fineSection(table, r, views, disabled) {
    const details = h("details", { class: "sm-fine", open: this.fineOpen || undefined,
      ontoggle: (e) => { if (e.target.open !== this.fineOpen) { this.fineOpen = e.target.open; this.render(); } } },
    h("summary", {}, `Fine blocks (${table.extended.length}) `,
      h("span", { class: "sm-hint" }, r.layout === "fine" ? "· the list has all 110 values"
        : "· editing one turns the list into 110 values")));
    if (this.fineOpen) {
      const groups = W.fineGroups(table).filter((g) => g.names.length);
      details.append(h("div", { class: "sm-fine-grid" }, groups.map((g) => h("div", { class: "sm-fine-group" },
        h("div", { class: "sm-fine-title" }, g.block),
        g.names.map((n) => this.row("f", n, views.fine?.[table.extended.indexOf(n)], disabled, table))))),
      h("div", { class: "sm-bar" }, h("button", { class: "sm-btn sm-wide", type: "button", disabled: disabled || r.layout !== "fine",
        title: "Write the 20-value list again (each block gets the mean of its fine blocks)",
        onclick: () => this.toFine(false) }, "back to 20 values")));
    }
    return details;
  }

  tools(table, disabled) {
    const groups = [["ALL", "all blocks"], ...W.groupsFor(table).map((g) => [g, g]),
      ["SEL", `selection (${this.selection.size})`]];
    const t = this.tool;
    const sel = (cls, options, key, title) => h("select", { class: cls, title, onchange: (e) => { t[key] = e.target.value; } },
      options.map(([v, label]) => h("option", { value: v, selected: v === t[key] }, label)));
    return h("div", { class: "sm-tools" },
      sel("sm-group", groups, "group", "Which blocks the helper changes"),
      sel("sm-op", OPS, "op", "set to, add, or multiply by the value"),
      h("input", { class: "sm-opval", type: "number", step: 0.05, value: t.value, title: "The value",
        oninput: (e) => { t.value = e.target.value; },
        onkeydown: (e) => { if (e.key === "Enter") this.applyTool(); } }),
      h("button", { class: "sm-btn sm-apply", type: "button", disabled: this.linked(this.spec()),
        title: disabled ? "set ALL starts a broken list again" : "Apply to the blocks chosen", onclick: () => this.applyTool() }, "apply"),
      this.selection.size ? h("button", { class: "sm-btn sm-unselect", type: "button", title: "Clear the selection",
        onclick: () => { this.selection.clear(); this.tool.group = "ALL"; this.render(); } }, h("i", { class: "pi pi-times" })) : null);
  }
}
