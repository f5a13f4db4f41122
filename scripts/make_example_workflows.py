"""Writes example_workflows/*.json (ComfyUI's UI format) from the compact graphs below.

    python scripts/make_example_workflows.py

Each graph: nodes as (id, type, widget values, {input name: (source id, output slot)}), laid out left to
right in columns by their depth in the graph, each node as large as ComfyUI's frontend draws it: the sizes in
node_sizes.json were measured in the editor, before and after a run (charts, images and texts drawn), by
tests/host/test_templates_e2e.py (SUPERMERGER_NODE_SIZES=1 measures them again). That test loads every
template in headless Chromium, checks that no two nodes overlap and runs each on mini checkpoints; with
SUPERMERGER_TEMPLATE_THUMBS=1 it writes the thumbnails (<name>.jpg) from those runs. Each template starts with
a note: its title and which checkpoints to pick (ComfyUI 0.3.64's template browser shows a custom template's
file name only; the title and description are also kept in the workflow's extra.info).
"""
import json
from pathlib import Path

HERE = Path(__file__).resolve().parent
OUT = HERE.parent / "example_workflows"
SIZES = json.loads((HERE / "node_sizes.json").read_text())  # type → [width, height with the title bar]
TITLE = 30  # LiteGraph's title bar, drawn above a node's position
GAP_X, GAP_Y = 60, 40
IMAGE_ROOM = (400, 400)  # nodes that show images get room for a chart or picture drawn after the run
IMAGE_NODES = {"SaveImage", "SuperMergerSaveImage", "PreviewImage"}
NOTE_HEIGHT = 110
# The block-weight panel grows its node once the editor has read the model's family (after the size was
# measured, on a slow machine): room for its largest form.
PANEL_NODES = {"SuperMergerCheckpointMerge": 200, "SuperMergerBlockWeights": 200}

OUTPUT_TYPES = {
    "CheckpointLoaderSimple": [("MODEL", "MODEL"), ("CLIP", "CLIP"), ("VAE", "VAE")],
    "CLIPTextEncode": [("CONDITIONING", "CONDITIONING")],
    "EmptyLatentImage": [("LATENT", "LATENT")],
    "KSampler": [("LATENT", "LATENT")],
    "VAEDecode": [("IMAGE", "IMAGE")],
    "SaveImage": [],
    "PreviewAny": [],
    "SuperMergerWeightSum": [("MODEL", "MODEL"), ("CLIP", "CLIP"), ("recipe", "STRING")],
    "SuperMergerAddDifference": [("MODEL", "MODEL"), ("CLIP", "CLIP"), ("recipe", "STRING")],
    "SuperMergerBlockWeights": [("weights", "SUPERMERGER_PARAMS")],
    "SuperMergerAnalysis": [("table", "STRING"), ("chart", "IMAGE")],
    "SuperMergerElemental": [("weights", "SUPERMERGER_PARAMS")],
    "SuperMergerIncludeExclude": [("weights", "SUPERMERGER_PARAMS")],
    "SuperMergerDiceRoll": [("weights", "SUPERMERGER_PARAMS")],
    "SuperMergerSumTwice": [("MODEL", "MODEL"), ("CLIP", "CLIP"), ("recipe", "STRING")],
    "SuperMergerTripleSum": [("MODEL", "MODEL"), ("CLIP", "CLIP"), ("recipe", "STRING")],
    "SuperMergerAdjust": [("MODEL", "MODEL")],
    "SuperMergerElements": [("elements", "STRING")],
    "SuperMergerCheckpointMerge": [("MODEL", "MODEL"), ("CLIP", "CLIP"), ("VAE", "VAE"), ("recipe", "STRING"),
                                   ("merge_id", "INT")],
    "SuperMergerSave": [("path", "STRING")],
    "SuperMergerSaveImage": [],
    "SuperMergerLoraToModel": [("MODEL", "MODEL"), ("CLIP", "CLIP")],
    "SuperMergerLoraMerge": [("lora_name", "STRING"), ("lora_list", "STRING")],
    "SuperMergerHistory": [("recipe", "STRING"), ("merge_id", "INT"), ("listing", "STRING")],
    "SuperMergerHistoryWeights": [("table", "STRING"), ("chart", "IMAGE")],
    "SuperMergerMetadata": [("metadata", "STRING")],
    "SuperMergerXYZPlan": [("MODEL", "MODEL"), ("CLIP", "CLIP"), ("seed", "INT"), ("prompt", "STRING"),
                           ("recipe", "STRING"), ("plan", "SUPERMERGER_XYZ_PLAN")],
    "SuperMergerXYZGrid": [("grids", "IMAGE"), ("cells", "IMAGE"), ("summary", "STRING")],
    "Note": [],
}
INPUT_TYPES = {"model": "MODEL", "model_a": "MODEL", "model_b": "MODEL", "model_c": "MODEL", "clip": "CLIP",
               "clip_a": "CLIP", "clip_b": "CLIP", "clip_c": "CLIP", "vae": "VAE", "samples": "LATENT",
               "latent_image": "LATENT", "positive": "CONDITIONING", "negative": "CONDITIONING",
               "images": "IMAGE", "weights": "SUPERMERGER_PARAMS", "source": "*", "recipe": "STRING",
               "merge_id": "INT", "plan": "SUPERMERGER_XYZ_PLAN", "text": "STRING", "seed": "INT"}
WIDGET_INPUTS = ("text", "seed")  # widgets fed by a link: the editor keeps their values and marks the input


def sampler_tail(first_id, model, clip, vae, prefix, merge=None):
    """Prompt → sample → decode → save; with `merge` (a Checkpoint Merge node id) the images carry its merge ID."""
    i = first_id
    save = ((i + 5, "SuperMergerSaveImage", [prefix, False], {"images": (i + 4, 0), "merge_id": (merge, 4),
                                                              "recipe": (merge, 3)})
            if merge is not None else (i + 5, "SaveImage", [prefix], {"images": (i + 4, 0)}))
    return [
        (i, "CLIPTextEncode", ["a cozy cabin in a snowy forest, warm light, detailed"], {"clip": clip}),
        (i + 1, "CLIPTextEncode", ["blurry, low quality"], {"clip": clip}),
        (i + 2, "EmptyLatentImage", [512, 512, 1], {}),
        (i + 3, "KSampler", [0, "fixed", 20, 7.0, "euler", "normal", 1.0],
         {"model": model, "positive": (i, 0), "negative": (i + 1, 0), "latent_image": (i + 2, 0)}),
        (i + 4, "VAEDecode", [], {"samples": (i + 3, 0), "vae": vae}),
        save,
    ]


def checkpoint_merge(nid, a, b, c="(none)", mode="weight_sum", calcmode="normal", alpha=0.5, beta=0.25,
                     weights_alpha="", elemental="", inputs=None):
    """A SuperMergerCheckpointMerge node with its widgets in input order."""
    widgets = [a, b, c, mode, calcmode, alpha, beta, 0.3, weights_alpha, "", elemental, "off", "", "", "", False,
               True, 2]
    return (nid, "SuperMergerCheckpointMerge", widgets, inputs or {})


def loaders(names):
    return [(i + 1, "CheckpointLoaderSimple", [n], {}) for i, n in enumerate(names)]


GRAPHS = {
    "weight_sum_generate": {
        "title": "Weight sum of two models, then generate",
        "description": ("Pick two checkpoints of one family (SD1.x, SD2.x, SDXL or Flux) in the loaders: model A is"
                        " the base, model B is mixed in at alpha. Nothing is saved; the merge is computed as the "
                        "sampler loads it."),
        "nodes": loaders(["model_a.safetensors", "model_b.safetensors"]) + [
            (3, "SuperMergerWeightSum", [0.3, 0.25, "normal", False],
             {"model_a": (1, 0), "model_b": (2, 0), "clip_a": (1, 1), "clip_b": (2, 1)}),
            (4, "PreviewAny", [], {"source": (3, 2)}),
        ] + sampler_tail(5, (3, 0), (3, 1), (1, 2), "supermerger_weight_sum"),
    },
    "block_weights_preset": {
        "title": "Block weights (MBW) with a preset",
        "description": ("Pick two checkpoints of one family in the loaders. Block Weights sets alpha per block: a "
                        "preset (GRAD_V here), 26 numbers, or the sliders of its panel."),
        "nodes": loaders(["model_a.safetensors", "model_b.safetensors"]) + [
            (3, "SuperMergerBlockWeights", ["", "GRAD_V", "", "(none)"], {}),
            (4, "SuperMergerWeightSum", [0.5, 0.25, "normal", False],
             {"model_a": (1, 0), "model_b": (2, 0), "clip_a": (1, 1), "clip_b": (2, 1), "weights": (3, 0)}),
            (5, "PreviewAny", [], {"source": (4, 2)}),
        ] + sampler_tail(6, (4, 0), (4, 1), (1, 2), "supermerger_mbw"),
    },
    "add_difference_train_difference": {
        "title": "Add difference with trainDifference",
        "description": ("Pick three checkpoints of one family: A the model to improve, B a fine-tune, C the model B"
                        " was trained from. What B learned (B - C) is added to A."),
        "nodes": loaders(["base.safetensors", "finetuned.safetensors", "original.safetensors"]) + [
            (4, "SuperMergerAddDifference", [1.0, 0.25, 0.3, "trainDifference", False],
             {"model_a": (1, 0), "model_b": (2, 0), "model_c": (3, 0), "clip_a": (1, 1), "clip_b": (2, 1),
              "clip_c": (3, 1)}),
            (5, "PreviewAny", [], {"source": (4, 2)}),
        ] + sampler_tail(6, (4, 0), (4, 1), (1, 2), "supermerger_train_difference"),
    },
    "similarity_chart": {
        "title": "How much a merge changed each block",
        "description": ("Pick two checkpoints of one family in the loaders; the chart compares model A with their "
                        "block-weighted merge, block by block."),
        "nodes": loaders(["model_a.safetensors", "model_b.safetensors"]) + [
            (3, "SuperMergerBlockWeights", ["", "GRAD_A", "", "(none)"], {}),
            (4, "SuperMergerWeightSum", [0.5, 0.25, "normal", False],
             {"model_a": (1, 0), "model_b": (2, 0), "clip_a": (1, 1), "clip_b": (2, 1), "weights": (3, 0)}),
            (5, "SuperMergerAnalysis", ["block", "mean"],
             {"model_a": (1, 0), "model_b": (4, 0), "clip_a": (1, 1), "clip_b": (4, 1)}),
            (6, "PreviewAny", [], {"source": (5, 0)}),
            (7, "SaveImage", ["supermerger_similarity"], {"images": (5, 1)}),
        ],
    },
    "controls_chain_sum_twice": {
        "title": "Elemental, Include/Exclude and a dice roll, sum twice, then Adjust",
        "description": ("Pick three checkpoints of one family (A, B, C) in the loaders, and a checkpoint for Model "
                        "Elements to list its keys. The parameter nodes decide which keys merge and by how much."),
        "nodes": loaders(["model_a.safetensors", "model_b.safetensors", "model_c.safetensors"]) + [
            (4, "SuperMergerElemental", ["OUT03-OUT05:attn2:0.8\nNOT M00:NOT attn:0.2", False], {}),
            (5, "SuperMergerIncludeExclude", ["exclude", "VAE", "norm", ], {"weights": (4, 0)}),
            (6, "SuperMergerDiceRoll", ["U", 12345, "fixed", False, True, "", "1", "0", "1", "0", 3, False],
             {"weights": (5, 0)}),
            (7, "SuperMergerSumTwice", [0.5, 0.3, "normal", False],
             {"model_a": (1, 0), "model_b": (2, 0), "model_c": (3, 0), "clip_a": (1, 1), "clip_b": (2, 1),
              "clip_c": (3, 1), "weights": (6, 0)}),
            (8, "SuperMergerAdjust", [0.0, 0.0, 0.0, 0.0, 1.5, 0.0, 0.0, 0.0], {"model": (7, 0)}),
            (9, "PreviewAny", [], {"source": (7, 2)}),
            (10, "SuperMergerElements", ["model_a.safetensors", "attn2.to_k"], {}),
            (11, "PreviewAny", [], {"source": (10, 0)}),
        ] + sampler_tail(12, (8, 0), (7, 1), (1, 2), "supermerger_controls"),
    },
    "checkpoint_merge_save": {
        "title": "Checkpoint merge by name (low memory), generate, save when you like it",
        "description": ("Pick model_a and model_b in Checkpoint Merge itself (files of your checkpoints folder; no "
                        "loaders needed). Enable Save Checkpoint (Ctrl+M) once the image is right."),
        "muted": {4},  # Save: enable it (Ctrl+M) once the image is right
        "nodes": [
            checkpoint_merge(1, "model_a.safetensors", "model_b.safetensors", weights_alpha="GRAD_V",
                             elemental="OUT03-OUT05:attn2:0.8"),
            (2, "PreviewAny", [], {"source": (1, 4)}),
            (3, "PreviewAny", [], {"source": (1, 3)}),
            (4, "SuperMergerSave", ["", "checkpoints", "fp16", False, True, False, False],
             {"model": (1, 0), "clip": (1, 1), "vae": (1, 2), "recipe": (1, 3)}),
        ] + sampler_tail(5, (1, 0), (1, 1), (1, 2), "supermerger_checkpoint_merge", merge=1),
    },
    "rerun_from_history": {
        "title": "Run the last merge again from the history, bit for bit",
        "description": "Run a Checkpoint Merge first (e.g. the checkpoint merge template): Merge History (ID -1) hands "
                       "its recipe to Checkpoint Merge, whose own model choices it replaces. Also: the block weights "
                       "of the last three merges as a chart, and the metadata of a checkpoint you pick.",
        "nodes": [
            (1, "SuperMergerHistory", [-1, "", "and", 20, True], {}),
            (2, "PreviewAny", [], {"source": (1, 2)}),
            checkpoint_merge(3, "model_a.safetensors", "model_b.safetensors", inputs={"recipe": (1, 0)}),
            (4, "PreviewAny", [], {"source": (3, 3)}),
            (11, "SuperMergerHistoryWeights", ["-3--1", ""], {}),
            (12, "SaveImage", ["supermerger_history_weights"], {"images": (11, 1)}),
            (13, "SuperMergerMetadata", ["model_a.safetensors", "(none)"], {}),
            (14, "PreviewAny", [], {"source": (13, 0)}),
        ] + sampler_tail(5, (3, 0), (3, 1), (3, 2), "supermerger_rerun", merge=3),
    },
    "lora_block_weights": {
        "title": "Merge LoRAs, apply LoRAs with block weights",
        "description": ("Pick one checkpoint in the loader, and write the names of two LoRAs of your loras folder "
                        "in place of lora_a and lora_b (an unknown name lists the LoRAs there)."),
        "nodes": loaders(["model_a.safetensors"]) + [
            (2, "SuperMergerLoraMerge", ["lora_a:1\nlora_b:0.5:OUTS", "auto", True, "create new", "fp16", "merged_ab",
                                         False], {}),
            (3, "PreviewAny", [], {"source": (2, 0)}),
            (4, "SuperMergerLoraToModel", ["lora_a:0.8:OUTALL\nlora_b:1:1,0,0,0,1,1,1,0,0,0,0,0,0,0,0,0,0"],
             {"model": (1, 0), "clip": (1, 1)}),
        ] + sampler_tail(5, (4, 0), (4, 1), (1, 2), "supermerger_lora"),
    },
    "triple_sum": {
        "title": "Triple sum of three models",
        "description": ("Pick three checkpoints of one family in the loaders: the result is A*(1-alpha-beta) + "
                        "B*alpha + C*beta."),
        "nodes": loaders(["model_a.safetensors", "model_b.safetensors", "model_c.safetensors"]) + [
            (4, "SuperMergerTripleSum", [0.3, 0.2, "normal", False],
             {"model_a": (1, 0), "model_b": (2, 0), "model_c": (3, 0), "clip_a": (1, 1), "clip_b": (2, 1),
              "clip_c": (3, 1)}),
            (5, "PreviewAny", [], {"source": (4, 2)}),
        ] + sampler_tail(6, (4, 0), (4, 1), (1, 2), "supermerger_triple_sum"),
    },
}


def node_size(ntype: str) -> list:
    """The size a node is saved with (its body, without the title bar)."""
    width, height = SIZES.get(ntype, (340, 220))
    if ntype in IMAGE_NODES:
        width, height = max(width, IMAGE_ROOM[0]), max(height, IMAGE_ROOM[1] + TITLE)
    height += PANEL_NODES.get(ntype, 0)
    return [width, height - TITLE]


def layout(spec) -> dict:
    """Node id → [x, y]: a column per depth in the graph, as wide as its widest node; nodes stacked in it with
    their real heights; everything below the note."""
    columns = {}
    for nid, ntype, widgets, inputs in spec["nodes"]:
        columns[nid] = 0 if not inputs else 1 + max(columns[src] for src, _ in inputs.values())
    sizes = {nid: node_size(ntype) for nid, ntype, _, _ in spec["nodes"]}
    width = {}
    for nid, col in columns.items():
        width[col] = max(width.get(col, 0), sizes[nid][0])
    x_of = {0: 40}
    for col in range(1, max(columns.values()) + 1):
        x_of[col] = x_of[col - 1] + width.get(col - 1, 0) + GAP_X
    top = 40 + TITLE + NOTE_HEIGHT + GAP_Y + TITLE
    y_next, pos = {}, {}
    for nid, _ntype, _w, _i in spec["nodes"]:
        col = columns[nid]
        y = y_next.get(col, top)
        pos[nid] = [x_of[col], y]
        y_next[col] = y + sizes[nid][1] + TITLE + GAP_Y
    return pos, columns, sizes


def note(spec, width) -> dict:
    return {"id": 100, "type": "Note", "pos": [40, 40 + TITLE], "size": [width, NOTE_HEIGHT], "flags": {},
            "order": 0, "mode": 0, "inputs": [], "outputs": [], "title": spec["title"],
            "properties": {"text": ""}, "widgets_values": [f"{spec['title']}\n\n{spec['description']}"],
            "color": "#432", "bgcolor": "#653"}


def xyz_plot(title, description, prefix, x, y, alpha=0.5,
             prompt="a cozy cabin in a snowy forest, warm light, detailed"):
    """An XYZ plan whose per-cell lists drive the usual encode → sample → decode, the cells saved and laid out as a
    grid (saved too, its summary shown)."""
    plan = [
        "weight_sum", "normal", alpha, 0.25, 0.3, x[0], x[1], y[0], y[1], "none", "", 0, prompt]
    return {"title": title, "description": description, "nodes": loaders(["model_a.safetensors", "model_b.safetensors"]) + [
        (3, "SuperMergerXYZPlan", plan, {"model_a": (1, 0), "model_b": (2, 0), "clip_a": (1, 1), "clip_b": (2, 1)}),
        (4, "CLIPTextEncode", [prompt], {"clip": (3, 1), "text": (3, 3)}),
        (5, "CLIPTextEncode", ["blurry, low quality"], {"clip": (3, 1)}),
        (6, "EmptyLatentImage", [512, 512, 1], {}),
        (7, "KSampler", [0, "fixed", 20, 7.0, "euler", "normal", 1.0],
         {"model": (3, 0), "seed": (3, 2), "positive": (4, 0), "negative": (5, 0), "latent_image": (6, 0)}),
        (8, "VAEDecode", [], {"samples": (7, 0), "vae": (1, 2)}),
        (9, "SaveImage", [f"{prefix}_cell"], {"images": (8, 0)}),
        (10, "SuperMergerXYZGrid", [False], {"images": (8, 0), "plan": (3, 5)}),
        (11, "SaveImage", [f"{prefix}_grid"], {"images": (10, 0)}),
        (12, "PreviewAny", [], {"source": (10, 2)}),
    ]}


GRAPHS["xyz_alpha_seed"] = xyz_plot(
    "XYZ plot: alpha × seed",
    "Pick two checkpoints of one family in the loaders. Each cell is a lazy merge at one alpha, sampled at one "
    "seed by the usual sampler nodes (which run once per cell); XYZ Plot Grid lays the cells out with labels.",
    "xyz_alpha_seed",
                                    ("alpha", "0,0.25,0.5,0.75,1"), ("seed", "1,2"))
GRAPHS["xyz_pinpoint_blocks"] = xyz_plot(
    "XYZ plot: pinpoint blocks × alpha",
    "Pick two checkpoints of one family in the loaders. Alpha is 0 (all model A) except in the blocks each column "
    "names, which get the alpha of the row: which blocks carry what model B brings.", "xyz_pinpoint",
                                         ("pinpoint blocks", "IN01-IN05, M00, OUT03-OUT05"), ("alpha", "0.5,1"),
                                         alpha=0.0)


def build(spec):
    nodes, links = [], []
    out_links = {}
    pos, columns, sizes = layout(spec)
    for nid, ntype, widgets, inputs in spec["nodes"]:
        ins = []
        for slot, (name, (src, src_slot)) in enumerate(inputs.items()):
            link_id = len(links) + 1
            typ = INPUT_TYPES[name]
            links.append([link_id, src, src_slot, nid, slot, typ])
            out_links.setdefault((src, src_slot), []).append(link_id)
            ins.append({"name": name, "type": typ, "link": link_id})
            if name in WIDGET_INPUTS:
                ins[-1]["widget"] = {"name": name}
        nodes.append({"id": nid, "type": ntype, "pos": pos[nid], "size": sizes[nid],
                      "flags": {}, "order": 0, "mode": 2 if nid in spec.get("muted", ()) else 0, "inputs": ins,
                      "outputs": [], "properties": {"Node name for S&R": ntype}, "widgets_values": widgets})
    for node in nodes:
        node["outputs"] = [{"name": name, "type": typ, "links": out_links.get((node["id"], slot), []),
                            "slot_index": slot} for slot, (name, typ) in enumerate(OUTPUT_TYPES[node["type"]])]
    order = sorted(nodes, key=lambda n: columns[n["id"]])
    for i, node in enumerate(order):
        node["order"] = i + 1
    right = max(n["pos"][0] + n["size"][0] for n in nodes)
    nodes.insert(0, note(spec, max(600, min(right - 40, 1400))))
    return {"last_node_id": max(n["id"] for n in nodes), "last_link_id": len(links), "nodes": nodes,
            "links": links, "groups": [], "config": {},
            "extra": {"info": {"title": spec["title"], "description": spec["description"]}}, "version": 0.4}


if __name__ == "__main__":
    OUT.mkdir(exist_ok=True)
    for name, spec in GRAPHS.items():
        (OUT / f"{name}.json").write_text(json.dumps(build(spec), indent=1) + "\n")
        print(f"wrote example_workflows/{name}.json")
