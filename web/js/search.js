// Search terms for the pack's nodes. ComfyUI's node search (frontend 1.27, ComfyUI 0.3.64) matches only a
// node's id and title, and its V3 schema has no search aliases, so "mbw" found nothing and "merge" ranked
// Checkpoint Merge 23rd. This adds the terms below: a query whose every word starts one of a node's terms
// (or a word of its title) puts that node first, in the order of ALIASES, the search's own results after it.
// `rank` is pure (unit-tested); `installSearchAliases` hooks it into the editor where the editor allows, and
// otherwise does nothing, so the search works as before.

const MERGE = ["merge", "mbw", "block", "supermerger", "model merge", "checkpoint merge"];

// Node id → its search terms; the order is the order hits are listed in.
export const ALIASES = {
  SuperMergerCheckpointMerge: MERGE,
  SuperMergerWeightSum: [...MERGE, "weight sum"],
  SuperMergerAddDifference: [...MERGE, "add difference"],
  SuperMergerTripleSum: [...MERGE, "triple sum"],
  SuperMergerSumTwice: [...MERGE, "sum twice"],
  SuperMergerBlockWeights: ["mbw", "block weights", "supermerger"],
  SuperMergerElemental: ["elemental", "block", "supermerger"],
  SuperMergerIncludeExclude: ["include", "exclude", "block", "supermerger"],
  SuperMergerDiceRoll: ["dice", "random", "mbw", "supermerger"],
  SuperMergerSave: ["save checkpoint", "supermerger"],
  SuperMergerHistory: ["history", "recipe", "supermerger"],
  SuperMergerSaveImage: ["save image", "merge id", "supermerger"],
  SuperMergerAdjust: ["adjust", "supermerger"],
  SuperMergerAnalysis: ["similarity", "cosine", "supermerger"],
  SuperMergerElements: ["elements", "keys", "supermerger"],
  SuperMergerMetadata: ["metadata", "supermerger"],
  SuperMergerHistoryWeights: ["history", "weights", "supermerger"],
  SuperMergerLoraToModel: ["lora", "lbw", "block", "supermerger"],
  SuperMergerLoraMerge: ["lora", "merge", "supermerger"],
  SuperMergerLoraExtract: ["lora", "extract", "supermerger"],
  SuperMergerLoraExtractTwo: ["lora", "extract", "supermerger"],
};

const words = (text) => String(text ?? "").toLowerCase().split(/[^a-z0-9]+/).filter(Boolean);

/** Node ids whose terms the query names, in ALIASES order. Every query word must start a word of the node's
 * terms or title, and at least one must start a term's word (so a plain title search is left to the editor). */
export function aliasHits(query, titles = {}) {
  const q = words(query);
  if (!q.length || q.join("").length < 3) return [];
  const hits = [];
  for (const [id, terms] of Object.entries(ALIASES)) {
    const termWords = terms.flatMap(words);
    const all = [...termWords, ...words(titles[id])];
    if (q.every((w) => all.some((t) => t.startsWith(w))) && q.some((w) => termWords.some((t) => t.startsWith(w)))) {
      hits.push(id);
    }
  }
  return hits;
}

/** The search's results with the alias hits first. `defs`: node id → node def (hits not loaded are left out);
 * `keep(def)`: whether a hit passes the search's filters (input/output type…). */
export function rank(query, results, defs, keep = () => true) {
  const titles = Object.fromEntries(Object.keys(ALIASES).map((id) => [id, defs[id]?.display_name]));
  const first = aliasHits(query, titles).map((id) => defs[id]).filter((d) => d && keep(d));
  if (!first.length) return results;
  const seen = new Set(first.map((d) => d.name));
  return [...first, ...results.filter((d) => !seen.has(d.name))];
}

/** The editor's node-definition store (pinia), found through the Vue app; null where the editor differs. */
function nodeDefStore() {
  const el = document.getElementById("vue-app") ?? [...document.body.children].find((e) => e.__vue_app__);
  return el?.__vue_app__?.config?.globalProperties?.$pinia?._s?.get("nodeDef") ?? null;
}

/** Wrap the search service's searchNode (its prototype, so the service the editor rebuilds when node
 * definitions change keeps it). Returns whether it could. */
export function installSearchAliases() {
  const store = nodeDefStore();
  const service = store?.nodeSearchService;
  const proto = service && Object.getPrototypeOf(service);
  if (!proto || typeof proto.searchNode !== "function") return false;
  if (proto.searchNode.smAliases) return true;
  const original = proto.searchNode;
  const wrapped = function (query, filters = [], options, extra = {}) {
    const results = original.call(this, query, filters, undefined, extra);
    const wildcard = extra?.matchWildcards === false ? undefined : "*";
    const keep = (def) => filters.every(({ filterDef, value }) => filterDef.matches(def, value, { wildcard }));
    const ranked = rank(query, results, store.nodeDefsByName ?? {}, keep);
    return options?.limit ? ranked.slice(0, options.limit) : ranked;
  };
  wrapped.smAliases = true;
  proto.searchNode = wrapped;
  return true;
}
