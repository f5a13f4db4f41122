// What a history row says about a merge (pure: the history tab and the tests use it).

const short = (name) => String(name ?? "").replace(/\.(safetensors|ckpt|pt)$/i, "").split(/[\\/]/).pop();
const USES_BETA_MODES = ["triple_sum", "sum_twice"];
const USES_BETA_CALCMODES = ["tensor", "tensor2", "extract"];

/** α/β as the merge used them: the sliders, or the block-weight lists that replaced them. */
export function weightsText(e) {
  const parts = [e.weights_alpha ? `α blocks ${e.weights_alpha}` : `α ${e.alpha}`];
  if (e.weights_beta) parts.push(`β blocks ${e.weights_beta}`);
  else if (USES_BETA_MODES.includes(e.mode) || USES_BETA_CALCMODES.includes(e.calcmode)) parts.push(`β ${e.beta}`);
  return parts.join(" · ");
}

/** "A × B × C" by file name without folder or suffix. */
export function modelsText(e) {
  const m = e.models ?? {};
  return ["a", "b", "c"].filter((r) => m[r]).map((r) => short(m[r])).join(" × ");
}
