// SuperMerger's editor extension: the block-weight panel on the nodes that take block weights, and the
// merge-history sidebar tab. Everything here is an addition: when this script (or the pack's routes) fails,
// the nodes keep their plain text fields and work as before.
import { app } from "../../../scripts/app.js";
import { getEditorData } from "./api.js";
import { historyTab } from "./history.js";
import { BlockWeightPanel } from "./panel.js";
import { ALIASES, installSearchAliases } from "./search.js";

const MARGIN = 6; // the DOM widget's margin on each side (its element is the widget's height less two margins)
const ALPHA = { key: "alpha", label: "α", text: "weights_alpha" };
const BETA = { key: "beta", label: "β", text: "weights_beta" };
// Node id → the block-weight lists it has (text widget, and the preset box that wins over it).
// A future node with block-weight text inputs (e.g. the XYZ plan's mbw axes) is one more entry here.
export const TARGETS = {
  SuperMergerBlockWeights: [{ ...ALPHA, preset: "preset_alpha" }, { ...BETA, preset: "preset_beta" }],
  SuperMergerCheckpointMerge: [ALPHA, BETA],
};

const hooks = {
  /** One undo step for what the panel just wrote (the editor's own undo). */
  recordUndo() {
    const tracker = app.extensionManager?.workflow?.activeWorkflow?.changeTracker;
    if (tracker?.checkState) tracker.checkState();
    else {
      app.canvas?.emitBeforeChange?.();
      app.canvas?.emitAfterChange?.();
    }
  },
  canvasDirty() {
    app.graph?.setDirtyCanvas?.(true, true);
  },
  toast(text) {
    app.extensionManager?.toast?.add?.({ severity: "success", summary: "SuperMerger", detail: text, life: 2500 });
  },
};

function loadCss() {
  const href = new URL("./supermerger.css", import.meta.url).href;
  if (document.querySelector(`link[href="${href}"]`)) return;
  document.head.append(Object.assign(document.createElement("link"), { rel: "stylesheet", href }));
}

async function attachPanel(node, lists) {
  if (!lists.every((l) => node.widgets?.some((w) => w.name === l.text))) return;
  const data = await getEditorData();
  const panel = new BlockWeightPanel(node, lists, data, {
    ...hooks,
    // Only what the panel needs: grow a node too small for it, shrink one only after the panel itself shrank
    // (a node size is saved, and every change of it is an undo step of its own).
    resized(p, old) {
      const need = node.computeSize();
      const width = Math.max(node.size[0], p.minWidth());
      const shrink = old !== null && p.contentHeight < old;
      const height = shrink ? need[1] : need[1] > node.size[1] + 4 ? need[1] : node.size[1];
      if (width !== node.size[0] || height !== node.size[1]) node.setSize([width, height]);
      hooks.canvasDirty();
    },
  });
  const widget = node.addDOMWidget("sm_block_weights", "sm-block-weights", panel.el, {
    serialize: false, // the text widgets hold the value; this widget saves nothing and sends nothing
    hideOnZoom: true,
    getValue: () => "",
    setValue: () => {},
    margin: MARGIN,
    getMinHeight: () => panel.contentHeight + 2 * MARGIN,
    getMaxHeight: () => panel.contentHeight + 2 * MARGIN,
    onDraw: () => panel.tick(),
  });
  widget.serialize = false;
  for (const l of lists) node.widgets.find((w) => w.name === l.text)?.element?.addEventListener("input", () => panel.sync());
  const removed = node.onRemoved;
  node.onRemoved = function (...args) {
    panel.destroy();
    return removed?.apply(this, args);
  };
  node.smPanel = panel;
  // The width first, before the panel is laid out: its height is then measured once, at the width it keeps.
  if (node.size[0] < panel.minWidth()) node.setSize([panel.minWidth(), node.size[1]]);
  panel.detect().catch(() => {});
}

app.registerExtension({
  name: "SuperMerger.Editor",
  async setup() {
    loadCss();
    if (!installSearchAliases()) console.warn("SuperMerger: search terms (merge, mbw, block…) are off in this editor");
    getEditorData().catch((e) => console.warn("SuperMerger: the block-weight panel is off:", e.message));
    const tab = historyTab(app, hooks);
    const em = app.extensionManager;
    if (em?.registerSidebarTab) em.registerSidebarTab(tab);
    else em?.sidebarTab?.registerSidebarTab?.(tab);
  },
  beforeRegisterNodeDef(_nodeType, nodeData) {
    // where an editor reads search aliases from node definitions (newer ComfyUI), it has them without the hook
    if (ALIASES[nodeData?.name] && !nodeData.search_aliases) nodeData.search_aliases = [...ALIASES[nodeData.name]];
  },
  nodeCreated(node) {
    const lists = TARGETS[node.comfyClass];
    if (!lists) return;
    attachPanel(node, lists).catch((e) => console.warn(`SuperMerger: no block-weight panel on ${node.comfyClass}:`, e));
  },
});
