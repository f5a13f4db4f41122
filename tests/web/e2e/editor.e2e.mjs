// End-to-end run of the editor extension in headless Chromium against a running ComfyUI with this pack:
// the block-weight panel (add the node, slider, preset, group helper, copy/paste, undo, save → reload, legacy
// workflow, SDXL), queueing, and the merge-history tab (search, recipe, chart, load into graph, queue again).
//
//   node tests/web/e2e/editor.e2e.mjs --url http://127.0.0.1:PORT --out DIR [--shots DIR]
//
// Started by tests/host/test_web_e2e.py, which brings up ComfyUI (with the mini checkpoints, mini_a/mini_b and a
// header-only SDXL file tiny_sdxl) and checks the images: it gets {DIR}/results.json. Every UI check is asserted
// here; a failure exits non-zero with the step that failed, and leaves {DIR}/failure.png.
import assert from "node:assert/strict";
import { mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { parseArgs } from "node:util";

import { apiOf, launch } from "./browser.mjs";

const { values: opt } = parseArgs({ options: { url: { type: "string" }, out: { type: "string" },
  shots: { type: "string" }, chromium: { type: "string", default: "/usr/bin/chromium" } } });
const ROOT = new URL("../../../", import.meta.url);
const TAG = `e2e${Date.now().toString(36)}`;
mkdirSync(opt.out, { recursive: true });
const results = { tag: TAG, steps: [] };
let step = "start";
const log = (...a) => console.log(`[e2e ${((Date.now() - t0) / 1000).toFixed(1)}s] ${step}:`, ...a);
const t0 = Date.now();

const api = apiOf(opt.url);

// ------------------------------------------------------------------------------------------------- browser

const browser = await launch(api, opt.chromium);
const context = await browser.newContext({ viewport: { width: 1600, height: 1000 } });
await context.grantPermissions(["clipboard-read", "clipboard-write"], { origin: opt.url });
const page = await context.newPage();
const pageErrors = [];
page.on("pageerror", (e) => pageErrors.push(e.stack ?? e.message));
page.on("console", (m) => { if (m.text().includes("SuperMerger")) pageErrors.push(`console: ${m.text()}`); });

async function open(withExtension = true) {
  await page.goto(opt.url);
  await page.waitForFunction((withExtension) => window.app?.graph && window.app.extensions?.length
    && (!withExtension || window.app.extensions.some((e) => e.name === "SuperMerger.Editor")), withExtension, { timeout: 90000 });
  await page.waitForTimeout(1000); // the editor finishes its own start-up (settings, templates) first
}

const ours = (e) => e.includes("SuperMerger") || e.includes("/comfyui-supermerger/");

// ------------------------------------------------------------------------------------------------- helpers in the page

/** A graph with Checkpoint Merge (mini_a, mini_b) → prompts → KSampler (fixed seed) → VAEDecode → SaveImage,
 * opened as a saved workflow is (the editor's undo compares against what a loaded graph serializes to). */
async function buildRender() {
  const ids = await page.evaluate((tag) => {
    const { app } = window;
    app.graph.clear();
    const add = (type, pos, values = {}) => {
      const n = LiteGraph.createNode(type);
      n.pos = pos;
      app.graph.add(n);
      for (const [k, v] of Object.entries(values)) n.widgets.find((w) => w.name === k).value = v;
      return n;
    };
    const cm = add("SuperMergerCheckpointMerge", [620, 40], { model_a: "mini_a.safetensors", model_b: "mini_b.safetensors" });
    const pos = add("CLIPTextEncode", [1200, 40], { text: "a red apple on a table" });
    const neg = add("CLIPTextEncode", [1200, 260], { text: "blurry" });
    const lat = add("EmptyLatentImage", [1200, 480], { width: 64, height: 64, batch_size: 1 });
    const ks = add("KSampler", [1550, 40], { seed: 0, control_after_generate: "fixed", steps: 4, cfg: 7,
      sampler_name: "euler", scheduler: "normal", denoise: 1 });
    const dec = add("VAEDecode", [1900, 40]);
    const save = add("SaveImage", [1900, 200], { filename_prefix: tag });
    cm.connect(1, pos, 0);
    cm.connect(1, neg, 0);
    cm.connect(0, ks, 0);
    pos.connect(0, ks, 1);
    neg.connect(0, ks, 2);
    lat.connect(0, ks, 3);
    ks.connect(0, dec, 0);
    cm.connect(2, dec, 1);
    dec.connect(0, save, 0);
    app.graph.setDirtyCanvas(true, true);
    return { cm: cm.id, save: save.id };
  }, TAG);
  await load(await page.evaluate(() => app.graph.serialize()));
  return ids;
}

/** Scale 1, the node's top-left corner at (x, y) of the canvas. */
async function focusNode(id, x = 80, y = 90) {
  await page.evaluate(([id, x, y]) => {
    const n = app.graph.getNodeById(id);
    app.canvas.ds.scale = 1;
    app.canvas.ds.offset = [x - n.pos[0], y - n.pos[1]];
    app.canvas.setDirty(true, true);
  }, [id, x, y]);
  await page.waitForTimeout(400);
}

/** Open a workflow as the editor opens a file (without the missing-model dialogs the templates' names raise). */
const load = (wf) => page.evaluate((wf) => app.loadGraphData(wf, true, true, null,
  { showMissingModelsDialog: false, showMissingNodesDialog: false }), wf);
/** Pan the canvas until `selector` is on screen (DOM widgets ride on the canvas; the page does not scroll). */
async function reveal(selector) {
  const box = await page.locator(selector).boundingBox();
  const { height } = page.viewportSize();
  const shift = box.y < 100 ? 100 - box.y : box.y + box.height > height - 60 ? height - 160 - box.y : 0;
  if (!shift) return;
  await page.evaluate((shift) => {
    app.canvas.ds.offset[1] += shift / app.canvas.ds.scale;
    app.canvas.setDirty(true, true);
  }, shift);
  await page.waitForTimeout(300);
}

const widget = (id, name) => page.evaluate(([id, name]) => app.graph.getNodeById(id).widgets.find((w) => w.name === name)?.value, [id, name]);
const panel = (id) => `.sm-panel[data-node="${id}"]`;
const row = (id, block, kind = "c") => `${panel(id)} .sm-row[data-block="${block}"][data-kind="${kind}"]`;
const tokens = (text) => text.split(",").map((t) => t.trim());

async function shot(name, id) {
  if (!opt.shots) return;
  mkdirSync(opt.shots, { recursive: true });
  const clip = await page.evaluate((id) => {
    const n = app.graph.getNodeById(id);
    const r = app.canvas.canvas.getBoundingClientRect();
    const { scale, offset } = app.canvas.ds;
    const title = LiteGraph.NODE_TITLE_HEIGHT;
    return { x: r.left + (n.pos[0] + offset[0]) * scale - 12, y: r.top + (n.pos[1] - title + offset[1]) * scale - 12,
      width: n.size[0] * scale + 24, height: (n.size[1] + title) * scale + 24 };
  }, id);
  await page.screenshot({ path: join(opt.shots, name), clip });
  log(`screenshot ${name}`);
}

/** Queue what the graph shows (as the Run button does) and wait for the new prompt's outcome. */
async function queueAndWait() {
  const before = new Set(Object.keys(await api("/api/history")));
  await page.evaluate(() => app.queuePrompt(0, 1));
  const deadline = Date.now() + 240000;
  while (Date.now() < deadline) {
    const hist = await api("/api/history");
    const id = Object.keys(hist).find((k) => !before.has(k) && hist[k].status?.completed !== undefined
      && (hist[k].status.completed || hist[k].status.status_str === "error"));
    if (id) {
      assert.equal(hist[id].status.status_str, "success", `prompt failed: ${JSON.stringify(hist[id].status.messages)}`);
      return id;
    }
    await new Promise((r) => setTimeout(r, 500));
  }
  throw new Error("the queued prompt did not finish in 240 s");
}

async function run(name, fn) {
  step = name;
  const s = Date.now();
  await fn();
  results.steps.push([name, Date.now() - s]);
  log("ok");
}

// ------------------------------------------------------------------------------------------------- the run

try {
  await run("open the editor", open);
  const editor = await api("/api/supermerger/editor");
  const preset = (name) => editor.presets.find((p) => p.name === name).text;
  let ids;
  let bw;

  await run("add the Block Weights node from the node search and connect it", async () => {
    ids = await buildRender();
    await page.evaluate(() => { app.canvas.ds.scale = 1; app.canvas.ds.offset = [0, 0]; app.canvas.setDirty(true, true); });
    await page.mouse.click(300, 600);
    await page.mouse.dblclick(300, 600);
    const input = page.getByPlaceholder("Search Nodes...");
    await input.waitFor();
    await input.fill("Block Weights SuperMerger");
    await page.locator(".p-autocomplete-option", { hasText: "Block Weights (SuperMerger)" }).first().click();
    bw = await page.evaluate(() => app.graph._nodes.find((n) => n.comfyClass === "SuperMergerBlockWeights")?.id);
    assert.ok(bw !== undefined, "no Block Weights node was added");
    await page.evaluate(([bw, cm]) => {
      const n = app.graph.getNodeById(bw);
      n.pos = [80, 40];
      n.connect(0, app.graph.getNodeById(cm), app.graph.getNodeById(cm).findInputSlot("weights"));
    }, [bw, ids.cm]);
    await focusNode(bw);
    await page.waitForSelector(`${panel(bw)}[data-family="sd1"] .sm-source:text("from mini_a.safetensors")`);
    assert.match(await page.textContent(`${panel(bw)} .sm-note`), /empty: every block uses the merge's α \(0\.5\)/);
    assert.equal(await page.locator(`${panel(bw)} .sm-row[data-kind="c"]`).count(), 26);
    assert.equal(await widget(bw, "weights_alpha"), "");
  });

  await run("move a slider", async () => {
    const box = await page.locator(`${row(bw, "IN05")} .sm-slider`).boundingBox();
    await page.mouse.click(box.x + box.width * 0.8, box.y + box.height / 2);
    const t = tokens(await widget(bw, "weights_alpha"));
    assert.equal(t.length, 26);
    assert.ok(Math.abs(Number(t[6]) - 0.8) < 0.05, `IN05 = ${t[6]}`);
    assert.deepEqual(t.filter((_, i) => i !== 6), Array(25).fill("0.5"));
    assert.equal(await page.inputValue(`${row(bw, "IN05")} .sm-num`), String(Math.round(Number(t[6]) * 1000) / 1000));
  });

  await run("pick a preset", async () => {
    await page.selectOption(`${panel(bw)} .sm-preset`, "GRAD_V");
    assert.equal(await widget(bw, "weights_alpha"), preset("GRAD_V"));
    assert.equal(await widget(bw, "preset_alpha"), "(none)");
    assert.match(await page.textContent(`${panel(bw)} .sm-preset option[value=""]`), /preset: GRAD_V/);
  });

  let afterGroup;
  await run("use a group helper: OUT × 0.5", async () => {
    await page.selectOption(`${panel(bw)} .sm-group`, "OUT");
    await page.selectOption(`${panel(bw)} .sm-op`, "mul");
    await page.fill(`${panel(bw)} .sm-opval`, "0.5");
    await page.click(`${panel(bw)} .sm-apply`);
    afterGroup = await widget(bw, "weights_alpha");
    const g = tokens(preset("GRAD_V"));
    const t = tokens(afterGroup);
    assert.deepEqual(t.slice(0, 14), g.slice(0, 14));
    t.slice(14).forEach((v, i) => assert.ok(Math.abs(Number(v) - Number(g[14 + i]) / 2) < 1e-6, `OUT${i}: ${v}`));
  });

  let finalAlpha;
  await run("type a value, select blocks and set them", async () => {
    await page.fill(`${row(bw, "IN05")} .sm-num`, "0.8");
    await page.press(`${row(bw, "IN05")} .sm-num`, "Enter");
    await page.click(`${row(bw, "IN00")} .sm-label`);
    await page.click(`${row(bw, "IN02")} .sm-label`, { modifiers: ["Shift"] });
    assert.equal(await page.locator(`${panel(bw)} .sm-row.sm-sel`).count(), 3);
    await page.selectOption(`${panel(bw)} .sm-op`, "set");
    await page.fill(`${panel(bw)} .sm-opval`, "0.25");
    await page.click(`${panel(bw)} .sm-apply`);
    finalAlpha = await widget(bw, "weights_alpha");
    const t = tokens(finalAlpha);
    assert.deepEqual([t[1], t[2], t[3], t[6]], ["0.25", "0.25", "0.25", "0.8"]);
    assert.deepEqual(t.slice(14), tokens(afterGroup).slice(14));
  });

  await run("typing in the text field moves the sliders", async () => {
    const text = `${finalAlpha.split(",").slice(0, 25).join(",")},0.6`;
    const field = await page.evaluateHandle((bw) => app.graph.getNodeById(bw).widgets[0].element, bw); // weights_alpha
    await field.fill(text);
    assert.equal(await widget(bw, "weights_alpha"), text);
    await page.waitForFunction((sel) => document.querySelector(sel)?.value === "0.6", `${row(bw, "OUT11")} .sm-num`);
    await field.fill(finalAlpha);
    await page.waitForFunction((sel) => document.querySelector(sel)?.value === "0.5", `${row(bw, "OUT11")} .sm-num`);
    await page.mouse.click(300, 960); // the field's own undo history ends here; the editor's records the change
  });

  await run("copy α, paste into β", async () => {
    await page.click(`${panel(bw)} .sm-copy`);
    await page.waitForSelector(`${panel(bw)} .sm-note:text("copied 26 values")`);
    await page.click(`${panel(bw)} .sm-tab[data-list="beta"]`);
    await page.waitForSelector(`${panel(bw)}[data-list="beta"]`);
    await page.click(`${panel(bw)} .sm-paste`);
    await page.waitForFunction(([bw, v]) => app.graph.getNodeById(bw).widgets.find((w) => w.name === "weights_beta").value === v,
      [bw, finalAlpha]);
    await page.click(`${panel(bw)} .sm-tab[data-list="alpha"]`);
  });

  await run("undo and redo through the editor's own undo", async () => {
    await page.mouse.click(300, 960); // empty canvas below the node, so the keys go to the editor
    const lists = () => page.evaluate((bw) => {
      const n = app.graph.getNodeById(bw);
      return n ? [n.widgets[0].value, n.widgets[2].value] : null;
    }, bw);
    const tracker = () => page.evaluate(() => {
      const ct = app.extensionManager.workflow.activeWorkflow.changeTracker;
      return [ct.undoQueue.length, ct.redoQueue.length, ct._restoringState];
    });
    // Ctrl + a key as a person types it (each key event a few frames apart), then wait until the editor has
    // loaded the state it went back (or forth) to. The editor handles a key a frame after it goes down and
    // checks the graph for changes when a key comes up; keys faster than frames make those two race.
    const press = async (key, [u, r]) => {
      const pause = () => page.waitForTimeout(120);
      await page.keyboard.down("Control");
      await pause();
      await page.keyboard.down(key);
      await pause();
      await page.keyboard.up(key);
      await pause();
      await page.keyboard.up("Control");
      try {
        await page.waitForFunction(([u, r]) => {
          const ct = app.extensionManager.workflow.activeWorkflow.changeTracker;
          return ct.undoQueue.length === u && ct.redoQueue.length === r && !ct._restoringState;
        }, [u, r], { timeout: 10000 });
      } catch (e) {
        throw new Error(`Control+${key}: the editor's undo queues are ${await tracker()}, not ${[u, r]}; lists `
          + `${(await lists())?.map((l) => l.slice(0, 20))}`);
      }
      return lists();
    };
    const [u] = await tracker();
    assert.deepEqual(await press("z", [u - 1, 1]), [finalAlpha, ""]); // before the paste
    const before = await press("z", [u - 2, 2]); // before "set the selection"
    assert.notEqual(before[0], finalAlpha);
    assert.equal(tokens(before[0])[6], "0.8");
    assert.deepEqual(await press("y", [u - 1, 1]), [finalAlpha, ""]);
    assert.deepEqual(await press("y", [u, 0]), [finalAlpha, finalAlpha]);
    await page.waitForSelector(`${panel(bw)} .sm-row`);
    assert.equal(await page.inputValue(`${row(bw, "IN05")} .sm-num`), "0.8");
  });

  let saved;
  await run("save, reload the page, open the saved workflow", async () => {
    saved = await page.evaluate(() => app.graph.serialize());
    const node = saved.nodes.find((n) => n.id === bw);
    assert.deepEqual(node.widgets_values, [finalAlpha, "(none)", finalAlpha, "(none)"]); // plain text, nothing more
    await open();
    await load(saved);
    await focusNode(bw);
    await page.waitForSelector(`${panel(bw)}[data-family="sd1"] .sm-row`);
    assert.equal(await widget(bw, "weights_alpha"), finalAlpha);
    assert.equal(await page.inputValue(`${row(bw, "IN05")} .sm-num`), "0.8");
    assert.equal(await page.inputValue(`${row(bw, "IN05")} .sm-slider`), "0.8");
  });

  await run("without the extension's JavaScript the node keeps its text fields", async () => {
    const mark = pageErrors.length;
    await context.route("**/comfyui-supermerger/js/**", (route) => route.abort());
    await open(false);
    assert.equal(await page.evaluate(() => app.extensions.some((e) => e.name === "SuperMerger.Editor")), false);
    await load(saved);
    const node = await page.evaluate((bw) => app.graph.getNodeById(bw).widgets.map((w) => [w.name, w.value]), bw);
    assert.deepEqual(node, [["weights_alpha", finalAlpha], ["preset_alpha", "(none)"], ["weights_beta", finalAlpha],
      ["preset_beta", "(none)"]]);
    assert.equal(await page.locator(".sm-panel").count(), 0);
    const prompt = await page.evaluate(async () => (await app.graphToPrompt()).output);
    assert.equal(prompt[String(bw)].inputs.weights_alpha, finalAlpha);
    await context.unroute("**/comfyui-supermerger/js/**");
    pageErrors.splice(mark); // the editor's complaints about the scripts this step withheld
    await open();
    await load(saved);
    await page.waitForSelector(`${panel(bw)} .sm-row`);
  });

  await run("queue it and get the image", async () => {
    results.first = await queueAndWait();
    const text = (await api(`/api/history/${results.first}`))[results.first].outputs[String(ids.cm)].text[0];
    results.merge_id = Number(/merge ID (\d+)/.exec(text)[1]);
    results.final_alpha = finalAlpha;
    results.saved_workflow = saved;
    await focusNode(bw);
    await shot("panel-sd1.png", bw);
  });

  await run("a workflow saved before the panel existed opens in it", async () => {
    const legacy = JSON.parse(readFileSync(new URL("example_workflows/block_weights_preset.json", ROOT), "utf8"));
    await load(legacy);
    const id = legacy.nodes.find((n) => n.type === "SuperMergerBlockWeights").id;
    await focusNode(id);
    await page.waitForSelector(`${panel(id)} .sm-row`);
    assert.match(await page.textContent(`${panel(id)} .sm-note`), /the preset_alpha box \(GRAD_V\) wins over the text/);
    const grad = tokens(preset("GRAD_V"));
    assert.equal(await page.inputValue(`${row(id, "IN01")} .sm-num`), String(Math.round(Number(grad[2]) * 1000) / 1000));
    await page.fill(`${row(id, "M00")} .sm-num`, "0.3");
    await page.press(`${row(id, "M00")} .sm-num`, "Enter");
    assert.equal(await widget(id, "preset_alpha"), "(none)");
    assert.deepEqual(tokens(await widget(id, "weights_alpha")), [...grad.slice(0, 13), "0.3", ...grad.slice(14)]);
  });

  await run("SDXL: the family read from the checkpoint's header, 20 blocks, 110 fine blocks", async () => {
    await page.evaluate(() => {
      app.graph.clear();
      const bwx = LiteGraph.createNode("SuperMergerBlockWeights");
      bwx.pos = [80, 40];
      app.graph.add(bwx);
      const cm = LiteGraph.createNode("SuperMergerCheckpointMerge");
      cm.pos = [700, 40];
      app.graph.add(cm);
      cm.widgets.find((w) => w.name === "model_a").value = "tiny_sdxl.safetensors";
      bwx.connect(0, cm, cm.findInputSlot("weights"));
    });
    const x = await page.evaluate(() => app.graph._nodes.find((n) => n.comfyClass === "SuperMergerBlockWeights").id);
    await focusNode(x);
    await page.waitForSelector(`${panel(x)}[data-family="sdxl"] .sm-source:text("from tiny_sdxl.safetensors")`);
    assert.equal(await page.locator(`${panel(x)} .sm-row[data-kind="c"]`).count(), 20);
    await page.selectOption(`${panel(x)} .sm-preset`, "COSINE");
    const cos = tokens(preset("COSINE"));
    assert.deepEqual(tokens(await widget(x, "weights_alpha")), [...cos.slice(0, 10), ...cos.slice(13, 23)]);
    await page.fill(`${row(x, "OUT02")} .sm-num`, "0.9");
    await page.press(`${row(x, "OUT02")} .sm-num`, "Enter");
    await shot("panel-sdxl.png", x);
    await page.click(`${panel(x)} .sm-fine > summary`);
    await page.waitForSelector(row(x, "IN411", "f"));
    assert.equal(await page.locator(`${panel(x)} .sm-row[data-kind="f"]`).count(), 110);
    await reveal(row(x, "IN411", "f"));
    await page.fill(`${row(x, "IN411", "f")} .sm-num`, "0.1");
    await page.press(`${row(x, "IN411", "f")} .sm-num`, "Enter");
    const fine = tokens(await widget(x, "weights_alpha"));
    assert.equal(fine.length, 110);
    assert.equal(fine[editor.families.sdxl.extended.indexOf("IN411")], "0.1");
    await shot("panel-sdxl-fine.png", x);
    await reveal(`${panel(x)} .sm-fine .sm-wide`);
    await page.click(`${panel(x)} .sm-fine .sm-wide`);
    assert.equal(tokens(await widget(x, "weights_alpha")).length, 20);
  });

  await run("Flux from its header, and a family chosen on the panel", async () => {
    const x = await page.evaluate(() => {
      const cm = app.graph._nodes.find((n) => n.comfyClass === "SuperMergerCheckpointMerge");
      cm.widgets.find((w) => w.name === "model_a").value = "tiny_flux.safetensors";
      app.canvas.setDirty(true, true);
      return app.graph._nodes.find((n) => n.comfyClass === "SuperMergerBlockWeights").id;
    });
    await focusNode(x);
    await page.waitForSelector(`${panel(x)}[data-family="flux"] .sm-source:text("from tiny_flux.safetensors")`);
    assert.equal(await page.locator(`${panel(x)} .sm-row[data-kind="c"]`).count(), 61);
    assert.match(await page.textContent(`${panel(x)} .sm-note`), /Flux takes 61 .*got 20/); // the SDXL list
    await page.selectOption(`${panel(x)} .sm-group`, "ALL");
    await page.selectOption(`${panel(x)} .sm-op`, "set");
    await page.fill(`${panel(x)} .sm-opval`, "0.4");
    await page.click(`${panel(x)} .sm-apply`); // "set all" starts a broken list again
    assert.deepEqual(tokens(await widget(x, "weights_alpha")), Array(61).fill("0.4"));
    await page.selectOption(`${panel(x)} .sm-family`, "sd2");
    await page.waitForSelector(`${panel(x)}[data-family="sd2"]`);
    assert.equal(await page.locator(`${panel(x)} .sm-row[data-kind="c"]`).count(), 26);
    assert.equal(await page.evaluate((x) => app.graph.getNodeById(x).properties.sm_family, x), "sd2");
    await page.selectOption(`${panel(x)} .sm-family`, "auto");
    await page.waitForSelector(`${panel(x)}[data-family="flux"]`);
  });

  await run("history tab: newest first, search, recipe, chart", async () => {
    await load(saved);
    await page.click(".supermerger-history-tab-button");
    await page.waitForSelector(".sm-history .sm-h-row");
    const ids = () => page.$$eval(".sm-h-row", (rows) => rows.map((r) => Number(r.dataset.id)));
    const page1 = await ids();
    assert.equal(page1[0], results.merge_id, "the newest merge is listed first");
    assert.deepEqual(page1, Array.from({ length: 20 }, (_, i) => results.merge_id - i));
    assert.match(await page.textContent(".sm-h-pager"), new RegExp(`1–20 of ${results.merge_id}`));
    await page.click(".sm-h-next");
    await page.waitForFunction((n) => document.querySelector(".sm-h-row")?.dataset.id === String(n), results.merge_id - 20);
    assert.deepEqual(await ids(), Array.from({ length: results.merge_id - 20 }, (_, i) => results.merge_id - 20 - i));
    await page.click(".sm-h-prev");
    await page.waitForFunction((n) => document.querySelector(".sm-h-row")?.dataset.id === String(n), results.merge_id);
    // Only this run's merge has both words (the earlier merges name their presets, not their values).
    await page.fill(".sm-h-q", "weight_sum 0.8");
    await page.click(".sm-h-go");
    await page.waitForFunction(() => /matching/.test(document.querySelector(".sm-h-status")?.textContent));
    assert.deepEqual(await ids(), [results.merge_id]);
    await page.fill(".sm-h-q", "0.8 GRAD_A");
    await page.click(".sm-h-go");
    await page.waitForFunction(() => /no merge matching/.test(document.querySelector(".sm-h-status")?.textContent));
    await page.selectOption(".sm-h-match", "or");
    await page.waitForFunction(() => document.querySelectorAll(".sm-h-row").length >= 2);
    const either = await ids();
    assert.equal(either.length, 2, `or: ${either}`);
    assert.equal(either[0], results.merge_id);
    for (const id of either.slice(0, 3)) await page.check(`.sm-h-row[data-id="${id}"] .sm-h-pick`);
    await page.click(".sm-h-chartbtn");
    await page.waitForSelector(".sm-h-chart svg");
    assert.equal(await page.locator(".sm-h-chart polyline").count(), Math.min(3, either.length));
    await page.click(`.sm-h-row[data-id="${results.merge_id}"] .sm-h-open`);
    await page.waitForFunction((v) => document.querySelector(".sm-h-recipe.sm-shown")?.textContent.includes(v), finalAlpha);
    if (opt.shots) {
      await page.locator(`.sm-h-row[data-id="${results.merge_id}"] .sm-h-open`).click(); // shut again for the picture
      const g = await page.locator(".p-splitter-gutter").first().boundingBox(); // a wider sidebar, as a user drags it
      await page.mouse.move(g.x + g.width / 2, g.y + 300);
      await page.mouse.down();
      await page.mouse.move(g.x + 180, g.y + 300, { steps: 5 });
      await page.mouse.up();
      await page.waitForTimeout(300);
      await page.locator(".sidebar-content-container").screenshot({ path: join(opt.shots, "history-tab.png") });
      log("screenshot history-tab.png");
    }
  });

  await run("load an entry into the graph and queue it again", async () => {
    await page.evaluate(() => app.canvas.deselectAll());
    const count = () => page.evaluate(() => app.graph._nodes.filter((n) => n.comfyClass === "SuperMergerHistory").length);
    await page.click(`.sm-h-row[data-id="${results.merge_id}"] .sm-h-load`);
    assert.equal(await count(), 1);
    const hid = await page.evaluate(() => app.graph._nodes.find((n) => n.comfyClass === "SuperMergerHistory").id);
    assert.equal(await widget(hid, "id"), results.merge_id);
    // The selected History node is filled, not a new one added.
    const other = await page.$$eval(".sm-h-row", (rows) => rows.map((r) => Number(r.dataset.id)));
    await page.click(`.sm-h-row[data-id="${other.find((i) => i !== results.merge_id)}"] .sm-h-load`);
    assert.equal(await count(), 1);
    assert.notEqual(await widget(hid, "id"), results.merge_id);
    await page.click(`.sm-h-row[data-id="${results.merge_id}"] .sm-h-load`);
    assert.equal(await widget(hid, "id"), results.merge_id);
    await page.evaluate(([hid, cm]) => {
      const c = app.graph.getNodeById(cm);
      app.graph.getNodeById(hid).connect(0, c, c.findInputSlot("recipe"));
    }, [hid, ids.cm]);
    results.rerun = await queueAndWait();
  });

  assert.deepEqual(pageErrors.filter(ours), [], "errors from the extension in the page");
  results.page_errors = pageErrors;
  writeFileSync(join(opt.out, "results.json"), JSON.stringify(results, null, 1));
  log(`done in ${((Date.now() - t0) / 1000).toFixed(1)} s`);
} catch (e) {
  await page.screenshot({ path: join(opt.out, "failure.png") }).catch(() => {});
  console.error(`FAILED at step "${step}": ${e.stack ?? e}`);
  console.error(pageErrors.join("\n"));
  process.exitCode = 1;
} finally {
  await browser.close();
}
