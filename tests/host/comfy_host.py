"""Helpers for the host tests: a real ComfyUI: started once per session on a free loopback port, with this pack
and freshly built random mini SD1.5 checkpoints supplied through an extra-paths file (the ComfyUI tree
itself is not touched). Run with ComfyUI's own python:

    COMFYUI_PATH=/path/to/ComfyUI /path/to/comfy-venv/bin/python -m pytest tests/host

Checkpoints are cached in $SUPERMERGER_HOST_CACHE (default ~/.cache/supermerger-comfy/host).
"""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import numpy as np

COMFY = os.environ.get("COMFYUI_PATH")
ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
SKIP_REASON = ("COMFYUI_PATH is not set: the host tests run the nodes in a real ComfyUI "
               "(see tests/host/conftest.py and the README)")


def _cache() -> Path:
    base = os.environ.get("SUPERMERGER_HOST_CACHE") or Path.home() / ".cache" / "supermerger-comfy" / "host"
    Path(base).mkdir(parents=True, exist_ok=True)
    return Path(base)


LAYOUT = "v2"  # bumped whenever make_checkpoints.py changes what it writes (v2: SD1 position ids)


def build_checkpoint(kind: str, seed: int) -> Path:
    out = _cache() / f"{kind}_{seed}_{LAYOUT}.safetensors"
    if not out.exists():
        env = dict(os.environ, COMFYUI_PATH=COMFY)
        subprocess.run([sys.executable, str(HERE / "make_checkpoints.py"), "--kind", kind, "--seed", str(seed),
                        "--out", str(out)], check=True, env=env, cwd=COMFY)
    return out


def mini_lora(work: Path, name: str, seed: int = 5) -> Path:
    """A random LoCon (U-Net incl. 3×3 convs, and text encoder) for the mini checkpoints, made by our engine and
    put in the loras folder of a harness ComfyUI whose base directory is `work`."""
    from safetensors.torch import save_file

    sys.path.insert(0, str(ROOT))
    from merge_core.lora.synthetic import random_lora
    from merge_core.sources import SafetensorsFile

    with SafetensorsFile(build_checkpoint("mini_sd15", 1)) as ckpt:
        shapes = {k: ckpt.shape(k) for k in ckpt.keys()}
    # LDM-style U-Net names: the mini model's layout is not the released one the diffusers names assume
    sd = random_lora(shapes, "sd1", rank=8, seed=seed, conv3x3=True, style="ldm", scale=0.12)
    folder = work / "models" / "loras"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.safetensors"
    save_file(sd, path, {"ss_network_module": "networks.lora"})
    return path


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Host:
    def __init__(self, url: str, work: Path, log: Path):
        self.url, self.work, self.log = url, work, log

    def get(self, path: str):
        with urllib.request.urlopen(self.url + path, timeout=60) as r:
            return json.loads(r.read())

    def queue(self, prompt: dict) -> str:
        body = json.dumps({"prompt": prompt, "client_id": "supermerger-tests"}).encode()
        req = urllib.request.Request(self.url + "/prompt", data=body, headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=60) as r:
            return json.loads(r.read())["prompt_id"]

    def post(self, path: str) -> None:
        req = urllib.request.Request(self.url + path, data=b"{}", headers={"Content-Type": "application/json"})
        urllib.request.urlopen(req, timeout=60).close()

    def status(self, pid: str):
        return self.get(f"/history/{pid}").get(pid, {}).get("status", {})

    def interrupt(self, prompt: dict, after: float, limit: float) -> tuple:
        """Queue `prompt`, press Interrupt once it has been running `after` seconds, and wait (at most `limit`
        seconds) until it ends. Returns (seconds from Interrupt to the end, its status messages by type)."""
        pid = self.queue(prompt)
        t0 = time.time()
        while time.time() - t0 < 120:
            running = self.get("/queue")["queue_running"]
            if any(item[1] == pid for item in running) and time.time() - t0 > after:
                break
            time.sleep(0.05)
        self.post("/interrupt")
        t_int = time.time()
        while not self.status(pid).get("completed") and self.status(pid).get("status_str") is None:
            assert time.time() - t_int < limit, f"not stopped within {limit} s of Interrupt"
            time.sleep(0.05)
        stopped = time.time() - t_int
        return stopped, dict(self.status(pid).get("messages", []))

    def refused(self, prompt: dict) -> dict:
        """The node errors ComfyUI answers a prompt it refuses before running anything (its validation, our
        nodes' validate_inputs): node id → [details of each error]."""
        body = json.dumps({"prompt": prompt, "client_id": "supermerger-tests"}).encode()
        req = urllib.request.Request(self.url + "/prompt", data=body, headers={"Content-Type": "application/json"})
        try:
            urllib.request.urlopen(req, timeout=60).close()
        except urllib.error.HTTPError as e:
            answer = json.loads(e.read())
            return {nid: [err["details"] for err in info["errors"]] for nid, info in answer["node_errors"].items()}
        raise AssertionError("the prompt was accepted")

    def run(self, prompt: dict, timeout: float = 900) -> dict:
        """Queue an API-format prompt and wait; returns its history entry (raises on a node error)."""
        body = json.dumps({"prompt": prompt, "client_id": "supermerger-tests"}).encode()
        req = urllib.request.Request(self.url + "/prompt", data=body, headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=60) as r:
                pid = json.loads(r.read())["prompt_id"]
        except urllib.error.HTTPError as e:
            raise AssertionError(f"prompt refused: {e.read().decode()[:2000]}") from None
        t0 = time.time()
        while time.time() - t0 < timeout:
            hist = self.get(f"/history/{pid}")
            if pid in hist:
                entry = hist[pid]
                status = entry.get("status", {})
                if status.get("status_str") == "error":
                    msgs = [m for m in status.get("messages", []) if m[0] == "execution_error"]
                    raise ExecutionFailed(msgs[0][1] if msgs else status)
                if status.get("completed"):
                    return entry
            time.sleep(0.2)
        raise AssertionError(f"prompt {pid} did not finish in {timeout} s")

    def image(self, entry: dict, node: str = None) -> np.ndarray:
        """The first saved image (of `node`, if given), fetched the way the editor does (/view)."""
        import io
        import urllib.parse

        from PIL import Image

        for nid, out in entry["outputs"].items():
            if node is not None and nid != node:
                continue
            for img in out.get("images", []):
                if node is None and img.get("type") != "output":
                    continue  # a node's own preview; tests want what SaveImage wrote
                query = urllib.parse.urlencode({"filename": img["filename"], "subfolder": img.get("subfolder", ""),
                                                "type": img.get("type", "output")})
                with urllib.request.urlopen(f"{self.url}/view?{query}", timeout=60) as r:
                    return np.asarray(Image.open(io.BytesIO(r.read())))
        raise AssertionError(f"no image in {entry['outputs']}")

    def text(self, entry: dict, node: str = None) -> str:
        """The text shown by a PreviewAny node (`node`, or the first one found)."""
        for nid, out in entry["outputs"].items():
            if "text" in out and (nid == node or (node is None and "images" not in out)):
                return out["text"][0]
        raise AssertionError(f"no text output in {entry['outputs']}")


class ExecutionFailed(AssertionError):
    def __init__(self, info):
        self.info = info
        super().__init__(f"{info.get('node_type')}: {info.get('exception_message')}" if isinstance(info, dict)
                         else str(info))


def graph(merge_node: str = None, inputs: dict = None, a="mini_a", b="mini_b", c=None, seed=0,
          extra: dict = None, text_out: bool = False) -> dict:
    """Checkpoint(s) → [merge] → KSampler 64×64, 4 steps → VAEDecode (A's VAE) → SaveImage."""
    g = {"ckA": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": f"{a}.safetensors"}}}
    model, clip = ["ckA", 0], ["ckA", 1]
    if merge_node:
        g["ckB"] = {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": f"{b}.safetensors"}}
        node_inputs = {"model_a": ["ckA", 0], "model_b": ["ckB", 0], "clip_a": ["ckA", 1], "clip_b": ["ckB", 1],
                       "alpha": 0.5, "beta": 0.25, "calcmode": "normal"}
        if merge_node == "SuperMergerAddDifference":
            node_inputs["gamma"] = 0.3
        if c:
            g["ckC"] = {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": f"{c}.safetensors"}}
            node_inputs.update(model_c=["ckC", 0], clip_c=["ckC", 1])
        node_inputs.update(inputs or {})
        g["merge"] = {"class_type": merge_node, "inputs": node_inputs}
        model, clip = ["merge", 0], ["merge", 1]
        if text_out:
            g["recipe"] = {"class_type": "PreviewAny", "inputs": {"source": ["merge", 2]}}
    g.update(extra or {})
    g.update(sampler(model, clip, ["ckA", 2], seed))
    return g


def sampler(model, clip, vae, seed: int = 0, steps: int = 4) -> dict:
    """The nodes after a model: prompts → KSampler 64×64 euler → VAEDecode → SaveImage (node ids pos, neg,
    lat, ks, dec, save)."""
    return {
        "pos": {"class_type": "CLIPTextEncode", "inputs": {"clip": clip, "text": "a red apple on a table"}},
        "neg": {"class_type": "CLIPTextEncode", "inputs": {"clip": clip, "text": "blurry"}},
        "lat": {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 1}},
        "ks": {"class_type": "KSampler", "inputs": {"model": model, "seed": seed, "steps": steps, "cfg": 7.0,
                                                   "sampler_name": "euler", "scheduler": "normal",
                                                   "positive": ["pos", 0], "negative": ["neg", 0],
                                                   "latent_image": ["lat", 0], "denoise": 1.0}},
        "dec": {"class_type": "VAEDecode", "inputs": {"samples": ["ks", 0], "vae": vae}},
        "save": {"class_type": "SaveImage", "inputs": {"images": ["dec", 0], "filename_prefix": uuid.uuid4().hex}},
    }


def launch(work: Path, checkpoints: dict, env: dict = None, tag: str = "", pack: Path = None,
           extra_args=()) -> tuple:
    """Start ComfyUI with this pack (or another copy of it, `pack`) and `checkpoints` ({name: file}) supplied
    through an extra-paths file in `work`, which is also its base directory (models, user data and saves stay
    there; the ComfyUI tree is not touched), plus `extra_args` for main.py. Returns (Host, process, seconds until
    it answered)."""
    models = work / "models" / "checkpoints"
    if not models.exists():
        models.mkdir(parents=True)
        for name, path in checkpoints.items():
            (models / f"{name}.safetensors").symlink_to(path)
        (work / "custom_nodes").mkdir()
        (work / "custom_nodes" / "comfyui-supermerger").symlink_to(pack or ROOT)
        (work / "extra_model_paths.yaml").write_text(
            f"supermerger_tests:\n  base_path: {work}\n  checkpoints: models/checkpoints\n  custom_nodes: custom_nodes\n")
    port = _free_port()
    log = work / f"server{tag}.log"
    t0 = time.perf_counter()
    with open(log, "w") as f:
        proc = subprocess.Popen(
            [sys.executable, "main.py", "--cpu", "--listen", "127.0.0.1", "--port", str(port),
             "--disable-auto-launch", "--base-directory", str(work), "--output-directory", str(work / "output"), "--temp-directory",
             str(work / "temp"), "--extra-model-paths-config", str(work / "extra_model_paths.yaml"), *extra_args],
            cwd=COMFY, stdout=f, stderr=subprocess.STDOUT, env=env)
    host = Host(f"http://127.0.0.1:{port}", work, log)
    try:
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"ComfyUI exited:\n{log.read_text()[-3000:]}")
            try:
                host.get("/system_stats")
                break
            except (urllib.error.URLError, ConnectionError, OSError):
                if time.perf_counter() - t0 > 180:
                    raise RuntimeError(f"ComfyUI did not come up in 180 s:\n{log.read_text()[-3000:]}") from None
                time.sleep(0.1)
    except BaseException:
        stop(proc)
        raise
    return host, proc, time.perf_counter() - t0


def stop(proc) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(30)


def start(tmp_path_factory):
    """Start ComfyUI for a test session; yields a Host and stops the server afterwards."""
    minis = {name: build_checkpoint("mini_sd15", seed) for name, seed in (("mini_a", 1), ("mini_b", 2), ("mini_c", 3))}
    host, proc, _seconds = launch(tmp_path_factory.mktemp("comfy"), minis)
    try:
        yield host
    finally:
        stop(proc)

WIDGET_TYPES = ("INT", "FLOAT", "STRING", "BOOLEAN", "COMBO")


def ui_to_api(workflow: dict, object_info: dict) -> dict:
    """A UI-format workflow (what the editor saves) as an API prompt, the way the editor converts it:
    linked inputs from `links`, widget inputs from `widgets_values` in the node's input order."""
    links = {link[0]: link for link in workflow["links"]}
    prompt = {}
    for node in workflow["nodes"]:
        if node.get("mode") == 2 or node["type"] not in object_info:  # muted, or the editor's own (a Note)
            continue
        info = object_info[node["type"]]
        linked = {i["name"]: links[i["link"]] for i in node.get("inputs", []) if i.get("link") is not None}
        inputs = {name: [str(link[1]), link[2]] for name, link in linked.items()}
        values = list(node.get("widgets_values", []))
        spec_of = {**info["input"].get("optional", {}), **info["input"]["required"]}
        for name in info["input_order"]["required"] + info["input_order"].get("optional", []):
            typ, opts = spec_of[name][0], (spec_of[name][1] if len(spec_of[name]) > 1 else {})
            if not (isinstance(typ, list) or typ in WIDGET_TYPES):
                continue
            # a widget fed by a link keeps its value in the file (the input says so with "widget"); a plain
            # input of a widget type has none
            fed = name in linked and any(i.get("widget") for i in node.get("inputs", []) if i["name"] == name)
            if name in linked and not fed:
                continue
            if not values:
                break
            value = values.pop(0)
            if not fed:
                inputs[name] = value
            if opts.get("control_after_generate"):
                values.pop(0)
        prompt[str(node["id"])] = {"class_type": node["type"], "inputs": inputs}
    return prompt
