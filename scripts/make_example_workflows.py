"""Writes example_workflows/*.json (ComfyUI's UI format) from the compact graphs below.

    python scripts/make_example_workflows.py

Each graph: nodes as (id, type, widget values, {input name: (source id, output slot)}), laid out left to
right. Output slot types come from OUTPUT_TYPES; the host tests run every file (tests/host).
"""
import json
from pathlib import Path

OUT = Path(__file__).resolve().parent.parent / "example_workflows"

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
        "title": "SuperMerger: weight sum, then generate",
        "nodes": loaders(["model_a.safetensors", "model_b.safetensors"]) + [
            (3, "SuperMergerWeightSum", [0.3, 0.25, "normal", False],
             {"model_a": (1, 0), "model_b": (2, 0), "clip_a": (1, 1), "clip_b": (2, 1)}),
            (4, "PreviewAny", [], {"source": (3, 2)}),
        ] + sampler_tail(5, (3, 0), (3, 1), (1, 2), "supermerger_weight_sum"),
    },
    "block_weights_preset": {
        "title": "SuperMerger: block weights (MBW) with a preset",
        "nodes": loaders(["model_a.safetensors", "model_b.safetensors"]) + [
            (3, "SuperMergerBlockWeights", ["", "GRAD_V", "", "(none)"], {}),
            (4, "SuperMergerWeightSum", [0.5, 0.25, "normal", False],
             {"model_a": (1, 0), "model_b": (2, 0), "clip_a": (1, 1), "clip_b": (2, 1), "weights": (3, 0)}),
            (5, "PreviewAny", [], {"source": (4, 2)}),
        ] + sampler_tail(6, (4, 0), (4, 1), (1, 2), "supermerger_mbw"),
    },
    "add_difference_train_difference": {
        "title": "SuperMerger: add difference with trainDifference",
        "nodes": loaders(["base.safetensors", "finetuned.safetensors", "original.safetensors"]) + [
            (4, "SuperMergerAddDifference", [1.0, 0.25, 0.3, "trainDifference", False],
             {"model_a": (1, 0), "model_b": (2, 0), "model_c": (3, 0), "clip_a": (1, 1), "clip_b": (2, 1),
              "clip_c": (3, 1)}),
            (5, "PreviewAny", [], {"source": (4, 2)}),
        ] + sampler_tail(6, (4, 0), (4, 1), (1, 2), "supermerger_train_difference"),
    },
    "similarity_chart": {
        "title": "SuperMerger: how much a merge changed each block",
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
        "title": "SuperMerger: elemental + include/exclude + dice roll, sum twice, then Adjust",
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
        "title": "SuperMerger: checkpoint merge by name (low memory), generate, save when you like it",
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
        "title": "SuperMerger: run the last merge again from the history (ID -1), bit for bit; the block weights "
                 "of earlier merges; a model's metadata",
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
        "title": "SuperMerger: merge LoRAs, apply LoRAs with block weights",
        "nodes": loaders(["model_a.safetensors"]) + [
            (2, "SuperMergerLoraMerge", ["lora_a:1\nlora_b:0.5:OUTS", "auto", True, "create new", "fp16", "merged_ab",
                                         False], {}),
            (3, "PreviewAny", [], {"source": (2, 0)}),
            (4, "SuperMergerLoraToModel", ["lora_a:0.8:OUTALL\nlora_b:1:1,0,0,0,1,1,1,0,0,0,0,0,0,0,0,0,0"],
             {"model": (1, 0), "clip": (1, 1)}),
        ] + sampler_tail(5, (4, 0), (4, 1), (1, 2), "supermerger_lora"),
    },
    "triple_sum": {
        "title": "SuperMerger: triple sum of three models",
        "nodes": loaders(["model_a.safetensors", "model_b.safetensors", "model_c.safetensors"]) + [
            (4, "SuperMergerTripleSum", [0.3, 0.2, "normal", False],
             {"model_a": (1, 0), "model_b": (2, 0), "model_c": (3, 0), "clip_a": (1, 1), "clip_b": (2, 1),
              "clip_c": (3, 1)}),
            (5, "PreviewAny", [], {"source": (4, 2)}),
        ] + sampler_tail(6, (4, 0), (4, 1), (1, 2), "supermerger_triple_sum"),
    },
}


def xyz_plot(title, prefix, x, y, alpha=0.5, prompt="a cozy cabin in a snowy forest, warm light, detailed"):
    """An XYZ plan whose per-cell lists drive the usual encode → sample → decode, the cells saved and laid out as a
    grid (saved too, its summary shown)."""
    plan = [
        "weight_sum", "normal", alpha, 0.25, 0.3, x[0], x[1], y[0], y[1], "none", "", 0, prompt]
    return {"title": title, "nodes": loaders(["model_a.safetensors", "model_b.safetensors"]) + [
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


GRAPHS["xyz_alpha_seed"] = xyz_plot("SuperMerger: XYZ plot, alpha × seed", "xyz_alpha_seed",
                                    ("alpha", "0,0.25,0.5,0.75,1"), ("seed", "1,2"))
GRAPHS["xyz_pinpoint_blocks"] = xyz_plot("SuperMerger: XYZ plot, pinpoint blocks × alpha", "xyz_pinpoint",
                                         ("pinpoint blocks", "IN01-IN05, M00, OUT03-OUT05"), ("alpha", "0.5,1"),
                                         alpha=0.0)


def build(spec):
    nodes, links = [], []
    out_links = {}
    columns = {}
    for nid, ntype, widgets, inputs in spec["nodes"]:
        depth = 0 if not inputs else 1 + max(columns[src] for src, _ in inputs.values())
        columns[nid] = depth
    rows = {}
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
        col = columns[nid]
        row = rows.get(col, 0)
        rows[col] = row + 1
        nodes.append({"id": nid, "type": ntype, "pos": [40 + 380 * col, 40 + 230 * row], "size": [340, 190],
                      "flags": {}, "order": 0, "mode": 2 if nid in spec.get("muted", ()) else 0, "inputs": ins, "outputs": [],
                      "properties": {"Node name for S&R": ntype}, "widgets_values": widgets})
    for node in nodes:
        node["outputs"] = [{"name": name, "type": typ, "links": out_links.get((node["id"], slot), []),
                            "slot_index": slot} for slot, (name, typ) in enumerate(OUTPUT_TYPES[node["type"]])]
    order = sorted(nodes, key=lambda n: columns[n["id"]])
    for i, node in enumerate(order):
        node["order"] = i
    return {"last_node_id": max(n["id"] for n in nodes), "last_link_id": len(links), "nodes": nodes,
            "links": links, "groups": [], "config": {}, "extra": {"info": {"title": spec["title"]}},
            "version": 0.4}


if __name__ == "__main__":
    OUT.mkdir(exist_ok=True)
    for name, spec in GRAPHS.items():
        (OUT / f"{name}.json").write_text(json.dumps(build(spec), indent=1) + "\n")
        print(f"wrote example_workflows/{name}.json")
