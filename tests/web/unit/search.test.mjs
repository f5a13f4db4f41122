// Unit tests of web/js/search.js: which of the pack's nodes a query names, and the order the search then lists.
import assert from "node:assert/strict";
import { test } from "node:test";

import { aliasHits, ALIASES, rank } from "../../../web/js/search.js";

const MERGES = ["SuperMergerCheckpointMerge", "SuperMergerWeightSum", "SuperMergerAddDifference",
  "SuperMergerTripleSum", "SuperMergerSumTwice"];

test("merge, mbw, block and supermerger name the merge nodes first", () => {
  for (const q of ["merge", "MBW", "block", "supermerger", "  Merg "]) {
    assert.deepEqual(aliasHits(q).slice(0, 5), MERGES, q);
  }
  assert.deepEqual(aliasHits("merge"), [...MERGES, "SuperMergerSaveImage", "SuperMergerLoraMerge"]);
  assert.ok(aliasHits("mbw").includes("SuperMergerBlockWeights"));
  assert.equal(aliasHits("supermerger").length, Object.keys(ALIASES).length);
});

test("every word must match, one of them a search term; short or unrelated queries are left alone", () => {
  assert.deepEqual(aliasHits("lora extract"), ["SuperMergerLoraExtract", "SuperMergerLoraExtractTwo"]);
  assert.deepEqual(aliasHits("mb"), []);
  assert.deepEqual(aliasHits("ksampler"), []);
  assert.deepEqual(aliasHits("merge ksampler"), []);
  // a title word counts once a term matched: "two" is only in the title of Extract LoRA from two LoRAs
  assert.deepEqual(aliasHits("lora two", { SuperMergerLoraExtractTwo: "Extract LoRA from two LoRAs (SuperMerger)" }),
    ["SuperMergerLoraExtractTwo"]);
});

test("rank puts the hits first, keeps the search's own results after them once, and honours filters", () => {
  const def = (name) => ({ name, display_name: name });
  const defs = Object.fromEntries([...MERGES, "SuperMergerLoraMerge", "ModelMergeSimple"].map((n) => [n, def(n)]));
  const results = [defs.ModelMergeSimple, defs.SuperMergerWeightSum];
  const out = rank("merge", results, defs).map((d) => d.name);
  assert.deepEqual(out, [...MERGES, "SuperMergerLoraMerge", "ModelMergeSimple"]); // Save Image: no def here
  const onlyWeightSum = rank("merge", results, defs, (d) => d.name === "SuperMergerWeightSum").map((d) => d.name);
  assert.deepEqual(onlyWeightSum, ["SuperMergerWeightSum", "ModelMergeSimple"]);
  assert.equal(rank("ksampler", results, defs), results);
});
