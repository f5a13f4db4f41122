// The pack's JSON routes (nodes/routes.py), through ComfyUI's api.fetchApi.
import { api } from "../../../scripts/api.js";

export async function getJson(path, params = {}) {
  const query = new URLSearchParams(Object.entries(params).filter(([, v]) => v !== undefined && v !== null));
  const res = await api.fetchApi(`/supermerger${path}${query.size ? `?${query}` : ""}`);
  let body = null;
  try {
    body = await res.json();
  } catch {
    body = null;
  }
  if (!res.ok) throw new Error(body?.error ?? `${path}: HTTP ${res.status}`);
  return body;
}

let editorData = null;

/** The block tables and presets, fetched once per page. */
export function getEditorData() {
  editorData ??= getJson("/editor").catch((e) => {
    editorData = null;
    throw e;
  });
  return editorData;
}

const families = new Map();

/** The family of a listed model file ({family, label} or {family: null, reason}), asked once per name. */
export function familyOfFile({ folder, name }) {
  const key = `${folder}/${name}`;
  if (!families.has(key)) {
    families.set(key, getJson("/family", { folder, name }).catch((e) => ({ family: null, reason: e.message })));
  }
  return families.get(key);
}
