// Which model file a block-weight list will be applied to, found by walking the graph: from a Block Weights
// node down its parameter chain to the merge node, then up that node's model_a input to the loader that
// names a file. Pure over LiteGraph's node methods (findInputSlot, getInputNode, getOutputNodes), so it is
// tested with plain objects.

export const PARAM_NODES = new Set(["SuperMergerBlockWeights", "SuperMergerElemental", "SuperMergerIncludeExclude",
  "SuperMergerDiceRoll"]);
export const MERGE_NODES = new Set(["SuperMergerWeightSum", "SuperMergerAddDifference", "SuperMergerTripleSum",
  "SuperMergerSumTwice"]);
export const CHECKPOINT_MERGE = "SuperMergerCheckpointMerge";
const FILE_WIDGETS = [["ckpt_name", "checkpoints"], ["unet_name", "diffusion_models"]];
const MAX_DEPTH = 32;

export const typeOf = (node) => node?.comfyClass ?? node?.type;

export function widgetOf(node, name) {
  return node?.widgets?.find((w) => w.name === name) ?? null;
}

function inputNode(node, name) {
  const slot = node?.findInputSlot?.(name) ?? -1;
  return slot >= 0 ? node.getInputNode(slot) : null;
}

/** The file a node's MODEL comes from: a loader's file widget, else up through the node's first linked
 * MODEL input (LoRA loaders, other merges: their model_a). */
export function upstreamFile(node, depth = 0) {
  if (!node || depth > MAX_DEPTH) return null;
  for (const [widget, folder] of FILE_WIDGETS) {
    const w = widgetOf(node, widget);
    if (w && typeof w.value === "string" && w.value) return { folder, name: w.value };
  }
  if (typeOf(node) === CHECKPOINT_MERGE) return checkpointMergeFile(node);
  const inputs = (node.inputs ?? []).filter((i) => i.type === "MODEL" && i.link != null);
  const first = inputs.find((i) => i.name === "model_a") ?? inputs.find((i) => i.name === "model") ?? inputs[0];
  return first ? upstreamFile(inputNode(node, first.name), depth + 1) : null;
}

function checkpointMergeFile(node) {
  const w = widgetOf(node, "model_a");
  return w && typeof w.value === "string" && w.value ? { folder: "checkpoints", name: w.value } : null;
}

/** The merge nodes a parameter node feeds, through any chain of parameter nodes. */
export function downstreamMerges(node) {
  const found = [];
  const seen = new Set();
  const walk = (n, depth) => {
    if (!n || depth > MAX_DEPTH || seen.has(n)) return;
    seen.add(n);
    for (const [slot] of (n.outputs ?? []).entries()) {
      for (const target of n.getOutputNodes?.(slot) ?? []) {
        const t = typeOf(target);
        if (MERGE_NODES.has(t) || t === CHECKPOINT_MERGE) found.push(target);
        else if (PARAM_NODES.has(t)) walk(target, depth + 1);
      }
    }
  };
  walk(node, 0);
  return found;
}

/** The merge a node's block weights end up in: the node itself when it merges, else the first one its
 * parameter chain reaches. */
export function mergeOf(node) {
  const t = typeOf(node);
  if (MERGE_NODES.has(t) || t === CHECKPOINT_MERGE) return node;
  return downstreamMerges(node)[0] ?? null;
}

/** {folder, name} of the model A file the node's block weights will be applied to, or null. */
export function modelFileFor(node) {
  const merge = mergeOf(node);
  if (!merge) return null;
  if (typeOf(merge) === CHECKPOINT_MERGE) return checkpointMergeFile(merge);
  return upstreamFile(inputNode(merge, "model_a"));
}

/** The merge's α (or β) slider: what every block gets while the list is empty. */
export function sliderValue(node, which) {
  const w = widgetOf(mergeOf(node), which);
  const v = Number(w?.value);
  return Number.isFinite(v) ? v : 0.5;
}
