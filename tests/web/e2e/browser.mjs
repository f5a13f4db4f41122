// What the browser tests share: the server's JSON API and a headless Chromium from the machine's packages.
import { chromium } from "playwright-core";

/** `api(path, init)` against the ComfyUI at `url`: the parsed JSON answer, or an error naming the path. */
export function apiOf(url) {
  return async function api(path, init) {
    const res = await fetch(`${url}${path}`, init);
    const text = await res.text();
    if (!res.ok) throw new Error(`${path}: HTTP ${res.status} ${text}`);
    return text ? JSON.parse(text) : null;
  };
}

/** Headless Chromium (`executablePath`: the machine's own), the editor's first-run tutorial already done. */
export async function launch(api, executablePath) {
  await api("/api/settings/Comfy.TutorialCompleted", { method: "POST", body: "true" });
  return chromium.launch({
    executablePath,
    args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
      "--disable-background-networking", "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage"],
  });
}
