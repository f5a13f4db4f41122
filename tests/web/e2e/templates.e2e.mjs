// The pack as a new user meets it, in headless Chromium against a running ComfyUI with this pack: the node
// search finds the merge nodes by "merge", "mbw", "block", "supermerger"; every template of example_workflows
// loads (as the editor's template browser loads it) with no two nodes overlapping, runs once its loaders point
// at the mini checkpoints, and still has no overlap once its images and texts are drawn.
//
//   node tests/web/e2e/templates.e2e.mjs --url http://127.0.0.1:PORT --out DIR [--measure]
//
// Started by tests/host/test_templates_e2e.py. Writes {DIR}/results.json (node sizes seen, per type) and a
// screenshot of each template after its run ({DIR}/<name>.jpg, which the test can make the thumbnails).
// --measure records the sizes without checking overlaps (for scripts/node_sizes.json). A failure exits non-zero
// with the step that failed, and leaves {DIR}/failure.png.
import assert from "node:assert/strict";
import { mkdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { parseArgs } from "node:util";

import { apiOf, launch } from "./browser.mjs";

const { values: opt } = parseArgs({ options: { url: { type: "string" }, out: { type: "string" },
  measure: { type: "boolean", default: false }, chromium: { type: "string", default: "/usr/bin/chromium" } } });
mkdirSync(opt.out, { recursive: true });
const MERGES = ["SuperMergerCheckpointMerge", "SuperMergerWeightSum", "SuperMergerAddDifference",
  "SuperMergerTripleSum", "SuperMergerSumTwice"];
const LAST = ["rerun_from_history"]; // reads the merges the other templates recorded
const results = { search: {}, templates: {}, sizes: {} };
let step = "start";
const t0 = Date.now();
const log = (...a) => console.log(`[templates ${((Date.now() - t0) / 1000).toFixed(1)}s] ${step}:`, ...a);

const api = apiOf(opt.url);

// Screenshots show the graph itself at any zoom: text kept when zoomed out, no minimap or menu over it.
for (const [id, value] of Object.entries({ "LiteGraph.Canvas.MinFontSizeForLOD": 0, "Comfy.Graph.CanvasInfo": false,
  "Comfy.Minimap.Visible": false, "Comfy.Graph.CanvasMenu": false })) {
  await api(`/api/settings/${id}`, { method: "POST", body: JSON.stringify(value) });
}
const browser = await launch(api, opt.chromium);
const page = await (await browser.newContext({ viewport: { width: 1280, height: 800 } })).newPage();
const pageErrors = [];
page.on("pageerror", (e) => pageErrors.push(e.stack ?? e.message));
page.on("console", (m) => { if (m.text().includes("SuperMerger")) pageErrors.push(`console: ${m.text()}`); });

/** Boxes of every node as the canvas draws it (title bar included), and the pairs that overlap. */
function overlaps() {
  return page.evaluate(() => {
    const boxes = window.app.graph._nodes.map((n) => {
      const b = n.boundingRect ?? [n.pos[0], n.pos[1] - 30, n.size[0], n.size[1] + 30];
      return { id: n.id, type: n.comfyClass ?? n.type, x: b[0], y: b[1], w: b[2], h: b[3] };
    });
    const pairs = [];
    for (const [i, a] of boxes.entries()) {
      for (const b of boxes.slice(i + 1)) {
        if (a.x < b.x + b.w && b.x < a.x + a.w && a.y < b.y + b.h && b.y < a.y + a.h) {
          pairs.push(`${a.type}#${a.id} and ${b.type}#${b.id}`);
        }
      }
    }
    return { boxes, pairs };
  });
}

async function queueAndWait() {
  const before = new Set(Object.keys(await api("/api/history")));
  await page.evaluate(() => window.app.queuePrompt(0, 1));
  const deadline = Date.now() + 900000; // a shared CI machine can be slow
  while (Date.now() < deadline) {
    const hist = await api("/api/history");
    const id = Object.keys(hist).find((k) => !before.has(k) && (hist[k].status?.completed
      || hist[k].status?.status_str === "error"));
    if (id) {
      assert.equal(hist[id].status.status_str, "success", `prompt failed: ${JSON.stringify(hist[id].status.messages)}`);
      return id;
    }
    await new Promise((r) => setTimeout(r, 500));
  }
  throw new Error("the queued prompt did not finish in 900 s");
}

/** The settings a mini checkpoint renders quickly with; everything else as the template has it. */
function pointAtMinis() {
  return page.evaluate(() => {
    const minis = ["mini_a.safetensors", "mini_b.safetensors", "mini_c.safetensors"];
    let next = 0;
    const set = (n, name, value) => { const w = n.widgets?.find((x) => x.name === name); if (w) w.value = value; };
    for (const n of [...window.app.graph._nodes].sort((a, b) => a.id - b.id)) {
      const type = n.comfyClass ?? n.type;
      if (type === "CheckpointLoaderSimple") set(n, "ckpt_name", minis[next++ % 3]);
      else if (type === "SuperMergerCheckpointMerge") { set(n, "model_a", minis[0]); set(n, "model_b", minis[1]); }
      else if (type === "SuperMergerElements" || type === "SuperMergerMetadata") set(n, "ckpt_name", minis[0]);
      else if (type === "EmptyLatentImage") { set(n, "width", 64); set(n, "height", 64); }
      else if (type === "KSampler") set(n, "steps", 4);
    }
    window.app.graph.setDirtyCanvas(true, true);
  });
}

async function fitAndShoot(path) {
  await page.evaluate(async () => {
    await window.app.extensionManager?.command?.execute?.("Comfy.Canvas.FitView");
    window.app.graph.setDirtyCanvas(true, true);
  });
  await page.waitForTimeout(600);
  await page.locator("#graph-canvas").screenshot({ path, type: "jpeg", quality: 72, timeout: 180000 });
}

function recordSizes(boxes) {
  for (const b of boxes) {
    const seen = results.sizes[b.type] ?? [0, 0];
    results.sizes[b.type] = [Math.max(seen[0], Math.ceil(b.w)), Math.max(seen[1], Math.ceil(b.h))];
  }
}

try {
  step = "open";
  await page.goto(opt.url);
  await page.waitForFunction(() => window.app?.graph && window.app.extensions?.some((e) => e.name === "SuperMerger.Editor"),
    null, { timeout: 90000 });
  await page.waitForTimeout(1500);

  step = "search";
  results.search = await page.evaluate((queries) => {
    const el = document.getElementById("vue-app") ?? [...document.body.children].find((e) => e.__vue_app__);
    const store = el.__vue_app__.config.globalProperties.$pinia._s.get("nodeDef");
    return Object.fromEntries(queries.map((q) => [q, store.nodeSearchService.searchNode(q, [], { limit: 64 })
      .map((d) => d.name)]));
  }, ["merge", "mbw", "block", "supermerger", "ksampler"]);
  for (const q of ["merge", "mbw", "block", "supermerger"]) {
    assert.deepEqual(results.search[q].slice(0, 5), MERGES, `search "${q}": ${results.search[q].slice(0, 8)}`);
  }
  assert.equal(results.search.ksampler[0], "KSampler", "a search without our terms is left as it was");

  step = "templates";
  const listing = await api("/api/workflow_templates");
  const module = Object.keys(listing).find((m) => listing[m].includes("checkpoint_merge_save"));
  assert.ok(module, `our templates are not listed: ${JSON.stringify(listing)}`);
  const names = [...listing[module]].sort((a, b) => LAST.includes(a) - LAST.includes(b) || a.localeCompare(b));
  for (const name of names) {
    step = `template ${name}`;
    const workflow = await api(`/api/workflow_templates/${module}/${name}.json`);
    await page.evaluate((wf) => window.app.loadGraphData(wf, true, true, null), workflow);
    await page.waitForTimeout(3000); // DOM widgets (the block-weight panel) size their nodes
    const loaded = await overlaps();
    if (!opt.measure) assert.deepEqual(loaded.pairs, [], `${name}: nodes overlap as loaded`);
    recordSizes(loaded.boxes);
    await pointAtMinis();
    const promptId = await queueAndWait();
    await page.waitForTimeout(2000); // images, charts and texts are drawn into their nodes
    await page.evaluate(() => window.app.graph.setDirtyCanvas(true, true));
    await page.waitForTimeout(300);
    const ran = await overlaps();
    if (!opt.measure) assert.deepEqual(ran.pairs, [], `${name}: nodes overlap once the run's outputs are drawn`);
    recordSizes(ran.boxes);
    await fitAndShoot(join(opt.out, `${name}.jpg`));
    results.templates[name] = { prompt: promptId, nodes: ran.boxes.length,
      title: workflow.extra?.info?.title ?? null, description: workflow.extra?.info?.description ?? null };
    log("ran, no overlap");
  }
  assert.deepEqual(pageErrors.filter((e) => e.includes("SuperMerger")), [], "errors from the extension in the page");
  results.page_errors = pageErrors;
  writeFileSync(join(opt.out, "results.json"), JSON.stringify(results, null, 1));
  log("done");
} catch (e) {
  await page.screenshot({ path: join(opt.out, "failure.png") }).catch(() => {});
  writeFileSync(join(opt.out, "results.json"), JSON.stringify(results, null, 1));
  console.error(`FAILED at step "${step}": ${e.stack ?? e}`);
  console.error(pageErrors.join("\n"));
  process.exitCode = 1;
} finally {
  await browser.close();
}
