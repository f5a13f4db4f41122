// Unit tests of web/js/graph.js on a small stand-in for LiteGraph's graph (nodes with inputs, outputs, widgets
// and the three methods the walk uses).
import assert from "node:assert/strict";
import { test } from "node:test";

import { downstreamMerges, mergeOf, modelFileFor, sliderValue } from "../../../web/js/graph.js";

class Graph {
  constructor() {
    this.links = new Map();
    this.next = 1;
  }

  node(type, { inputs = [], outputs = ["out"], widgets = {} } = {}) {
    const graph = this;
    return {
      type,
      comfyClass: type,
      inputs: inputs.map(([name, t]) => ({ name, type: t, link: null })),
      outputs: outputs.map((name) => ({ name, links: [] })),
      widgets: Object.entries(widgets).map(([name, value]) => ({ name, value })),
      findInputSlot(name) { return this.inputs.findIndex((i) => i.name === name); },
      getInputNode(slot) {
        const link = graph.links.get(this.inputs[slot]?.link);
        return link ? link.from : null;
      },
      getOutputNodes(slot) {
        const ids = this.outputs[slot]?.links ?? [];
        return ids.length ? ids.map((id) => graph.links.get(id).to) : null;
      },
    };
  }

  connect(from, slot, to, input) {
    const id = this.next++;
    this.links.set(id, { from, to });
    from.outputs[slot].links.push(id);
    to.inputs[to.findInputSlot(input)].link = id;
  }
}

const loader = (g, name) => g.node("CheckpointLoaderSimple", { outputs: ["MODEL", "CLIP", "VAE"], widgets: { ckpt_name: name } });
const merge = (g, type = "SuperMergerWeightSum", widgets = { alpha: 0.3, beta: 0.7 }) =>
  g.node(type, { inputs: [["model_a", "MODEL"], ["model_b", "MODEL"], ["weights", "SUPERMERGER_PARAMS"]], widgets });
const params = (g, type = "SuperMergerBlockWeights") => g.node(type, { inputs: [["weights", "SUPERMERGER_PARAMS"]] });

test("a Block Weights node finds model A's file through a chain of parameter nodes and the merge", () => {
  const g = new Graph();
  const a = loader(g, "sdxl/base.safetensors");
  const b = loader(g, "other.safetensors");
  const m = merge(g);
  const bw = params(g);
  const el = params(g, "SuperMergerElemental");
  g.connect(a, 0, m, "model_a");
  g.connect(b, 0, m, "model_b");
  g.connect(bw, 0, el, "weights");
  g.connect(el, 0, m, "weights");
  assert.deepEqual(downstreamMerges(bw), [m]);
  assert.equal(mergeOf(bw), m);
  assert.deepEqual(modelFileFor(bw), { folder: "checkpoints", name: "sdxl/base.safetensors" });
  assert.equal(sliderValue(bw, "alpha"), 0.3);
  assert.equal(sliderValue(bw, "beta"), 0.7);
});

test("model A through LoRA loaders and another merge, and from a diffusion-model loader", () => {
  const g = new Graph();
  const unet = g.node("UNETLoader", { widgets: { unet_name: "flux1-dev.safetensors", weight_dtype: "default" } });
  const lora = g.node("LoraLoaderModelOnly", { inputs: [["model", "MODEL"]], widgets: { lora_name: "x.safetensors" } });
  const inner = merge(g);
  const outer = merge(g);
  const bw = params(g);
  g.connect(unet, 0, lora, "model");
  g.connect(lora, 0, inner, "model_a");
  g.connect(inner, 0, outer, "model_a");
  g.connect(bw, 0, outer, "weights");
  assert.deepEqual(modelFileFor(bw), { folder: "diffusion_models", name: "flux1-dev.safetensors" });
});

test("Checkpoint Merge names its own model A; nothing found when the chain reaches no merge or no loader", () => {
  const g = new Graph();
  const cm = g.node("SuperMergerCheckpointMerge", { inputs: [["weights", "SUPERMERGER_PARAMS"]],
    widgets: { model_a: "a.safetensors", alpha: 0.4 } });
  assert.deepEqual(modelFileFor(cm), { folder: "checkpoints", name: "a.safetensors" });
  const bw = params(g);
  assert.equal(modelFileFor(bw), null);
  assert.equal(sliderValue(bw, "alpha"), 0.5); // no merge yet: the merge nodes' default
  g.connect(bw, 0, cm, "weights");
  assert.deepEqual(modelFileFor(bw), { folder: "checkpoints", name: "a.safetensors" });
  assert.equal(sliderValue(bw, "alpha"), 0.4);
  const m = merge(g);
  const bw2 = params(g);
  g.connect(bw2, 0, m, "weights");
  assert.equal(modelFileFor(bw2), null); // the merge's model_a is not connected
});

test("a cycle of parameter nodes ends the walk", () => {
  const g = new Graph();
  const p1 = params(g);
  const p2 = params(g);
  g.connect(p1, 0, p2, "weights");
  g.connect(p2, 0, p1, "weights");
  assert.deepEqual(downstreamMerges(p1), []);
});
