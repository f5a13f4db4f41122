// The merge-history browser: a sidebar tab listing the pack's merge history (newest first, paged, searched
// with SuperMerger's words and/or), each merge's full recipe, "load into graph" and a block-weight chart.
import { api } from "../../../scripts/api.js";
import { getJson } from "./api.js";
import { h } from "./dom.js";
import { chartSvg, legend } from "./chart.js";
import { modelsText, weightsText } from "./rows.js";

const PAGE = 20;
const HISTORY_NODE = "SuperMergerHistory";
// Kept while the tab is closed and opened again.
const state = { q: "", match: "and", filesOnly: false, offset: 0, chosen: new Map(), open: new Set() };

export function historyTab(app, hooks) {
  let browser = null;
  return {
    id: "supermerger-history",
    icon: "pi pi-book", // the queue tab already has pi-history
    title: "Merges",
    tooltip: "SuperMerger merge history",
    type: "custom",
    render: (el) => {
      browser?.close();
      browser = new HistoryBrowser(el, app, hooks);
      browser.load();
    },
    destroy: () => {
      browser?.close();
      browser = null;
    },
  };
}

class HistoryBrowser {
  constructor(root, app, hooks) {
    this.app = app;
    this.hooks = hooks;
    this.q = h("input", { class: "sm-h-q", type: "search", value: state.q, placeholder: "words: model, mode, calcmode, weights…",
      onkeydown: (e) => { e.stopPropagation(); if (e.key === "Enter") this.search(); } });
    this.match = h("select", { class: "sm-h-match", title: "and: every word; or: any word",
      onchange: () => this.search() },
    h("option", { value: "and", selected: state.match === "and" }, "all words"),
    h("option", { value: "or", selected: state.match === "or" }, "any word"));
    this.filesOnly = h("input", { type: "checkbox", class: "sm-h-files", checked: state.filesOnly,
      onchange: () => this.search() });
    this.status = h("div", { class: "sm-h-status" });
    this.list = h("div", { class: "sm-h-list" });
    this.pager = h("div", { class: "sm-h-pager" });
    this.chartBtn = h("button", { class: "sm-btn sm-h-chartbtn", type: "button", onclick: () => this.chart() });
    this.chartBox = h("div", { class: "sm-h-chart" });
    // A merge that finishes while the tab is open shows up at once (Checkpoint Merge and the merge nodes record
    // one per run).
    this.onDone = () => this.load();
    api.addEventListener("execution_success", this.onDone);
    root.replaceChildren(h("div", { class: "sm-history" },
      h("div", { class: "sm-h-title" }, h("span", {}, "Merge history"),
        h("button", { class: "sm-btn", type: "button", title: "Reload", onclick: () => this.load() }, h("i", { class: "pi pi-refresh" }))),
      h("div", { class: "sm-h-search" }, this.q,
        h("button", { class: "sm-btn sm-h-go", type: "button", title: "Search", onclick: () => this.search() }, h("i", { class: "pi pi-search" }))),
      h("div", { class: "sm-h-opts" }, this.match, h("label", { title: "Only merges of checkpoint files, which Checkpoint Merge can run again" },
        this.filesOnly, " checkpoint merges only")),
      this.status, this.list, this.pager,
      h("div", { class: "sm-h-actions" }, this.chartBtn,
        h("button", { class: "sm-btn", type: "button", title: "Clear the chart selection",
          onclick: () => { state.chosen.clear(); this.chartBox.replaceChildren(); this.load(); } }, "clear")),
      this.chartBox));
    this.updateChartButton();
  }

  close() {
    api.removeEventListener("execution_success", this.onDone);
  }

  search() {
    state.q = this.q.value;
    state.match = this.match.value;
    state.filesOnly = this.filesOnly.checked;
    state.offset = 0;
    this.load();
  }

  async load() {
    this.status.textContent = "loading…";
    let page;
    try {
      page = await getJson("/history", { q: state.q, match: state.match, offset: state.offset, limit: PAGE,
        files_only: state.filesOnly });
    } catch (e) {
      this.status.textContent = `the history cannot be read: ${e.message}`;
      this.status.classList.add("sm-error");
      return;
    }
    this.status.classList.remove("sm-error");
    const what = state.q.trim() ? ` matching “${state.q.trim()}”` : "";
    this.status.textContent = page.total ? `${page.total} merge${page.total === 1 ? "" : "s"}${what}, newest first`
      : page.all ? `no merge${what}` : "no merges recorded yet: run a SuperMerger merge";
    this.list.replaceChildren(...page.entries.map((e) => this.row(e)));
    const last = Math.min(page.offset + page.entries.length, page.total);
    this.pager.hidden = page.total === 0;
    this.pager.replaceChildren(
      h("button", { class: "sm-btn sm-h-prev", type: "button", disabled: page.offset === 0, title: "Newer",
        onclick: () => { state.offset = Math.max(0, state.offset - PAGE); this.load(); } }, h("i", { class: "pi pi-angle-left" })),
      h("span", {}, page.total ? `${page.offset + 1}–${last} of ${page.total}` : ""),
      h("button", { class: "sm-btn sm-h-next", type: "button", disabled: last >= page.total, title: "Older",
        onclick: () => { state.offset += PAGE; this.load(); } }, h("i", { class: "pi pi-angle-right" })));
  }

  row(e) {
    const box = h("input", { type: "checkbox", class: "sm-h-pick", checked: state.chosen.has(e.id),
      title: "Include in the block weight chart",
      onchange: (ev) => { if (ev.target.checked) state.chosen.set(e.id, e); else state.chosen.delete(e.id); this.updateChartButton(); } });
    const recipe = h("pre", { class: "sm-h-recipe" });
    const toggle = h("button", { class: "sm-btn sm-h-open", type: "button", title: "Show the full recipe",
      onclick: () => this.toggleRecipe(e.id, recipe) }, "recipe");
    const load = h("button", { class: "sm-btn sm-h-load", type: "button",
      title: "Add a Merge History node with this ID (or set the selected one)", onclick: () => this.loadIntoGraph(e) },
    h("i", { class: "pi pi-sign-in" }), " load into graph");
    const el = h("div", { class: "sm-h-row", "data-id": e.id },
      h("div", { class: "sm-h-top" }, box, h("span", { class: "sm-h-id" }, `#${e.id}`),
        h("span", { class: "sm-h-models", title: e.name }, modelsText(e) || e.name)),
      h("div", { class: "sm-h-meta" }, h("span", { class: "sm-h-mode" }, `${e.mode} · ${e.calcmode}`),
        h("span", { class: "sm-h-time" }, e.time),
        e.rerunnable ? null : h("span", { class: "sm-h-tag", title: "merged in the graph: Checkpoint Merge cannot run it again from files" }, "in-graph")),
      h("div", { class: "sm-h-weights", title: weightsText(e) }, weightsText(e)),
      h("div", { class: "sm-h-buttons" }, toggle, load),
      recipe);
    if (state.open.has(e.id)) this.toggleRecipe(e.id, recipe, true);
    return el;
  }

  async toggleRecipe(id, pre, reopen = false) {
    if (!reopen && state.open.has(id)) {
      state.open.delete(id);
      pre.textContent = "";
      pre.classList.remove("sm-shown");
      return;
    }
    state.open.add(id);
    pre.classList.add("sm-shown");
    pre.textContent = "loading…";
    try {
      const entry = await getJson("/history/entry", { id });
      pre.textContent = JSON.stringify({ recipe: entry.recipe, models: entry.models, origin: entry.origin,
        family: entry.family }, null, 2);
    } catch (e) {
      pre.textContent = e.message;
    }
  }

  loadIntoGraph(e) {
    const app = this.app;
    const selected = Object.values(app.canvas?.selected_nodes ?? {}).find((n) => (n.comfyClass ?? n.type) === HISTORY_NODE);
    let node = selected;
    if (!node) {
      node = globalThis.LiteGraph.createNode(HISTORY_NODE);
      const [x, y, w, hgt] = app.canvas.ds.visible_area;
      node.pos = [x + w / 2 - node.size[0] / 2, y + hgt / 2 - node.size[1] / 2];
      app.graph.add(node);
    }
    const set = (name, value) => {
      const w = node.widgets?.find((x) => x.name === name);
      if (w) { w.value = value; w.callback?.(value); }
    };
    set("id", e.id);
    set("search", "");
    if (!e.rerunnable) set("files_only", false);
    app.canvas.selectNode(node);
    this.hooks.canvasDirty();
    this.hooks.recordUndo();
    this.hooks.toast(`${selected ? "Set" : "Added"} Merge History #${e.id}`);
  }

  updateChartButton() {
    const n = state.chosen.size;
    this.chartBtn.textContent = n ? `block weight chart (${n})` : "block weight chart (tick merges)";
    this.chartBtn.disabled = n === 0;
  }

  async chart() {
    const ids = [...state.chosen.keys()];
    this.chartBox.textContent = "loading…";
    try {
      const data = await getJson("/history/weights", { ids: ids.join(",") });
      this.chartBox.innerHTML = chartSvg(data);
      this.chartBox.append(h("div", { class: "sm-h-legend" }, legend(data.series).map((l) =>
        h("div", { class: "sm-h-legend-item", title: l.text }, h("span", { class: "sm-h-swatch", style: `background:${l.color}` }), l.text))));
    } catch (e) {
      this.chartBox.textContent = e.message;
    }
  }
}
