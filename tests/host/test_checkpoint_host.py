"""Checkpoint merge from files, Save, and the merge history, in a real ComfyUI (issue: checkpoint merge)."""
import uuid

import numpy as np
import pytest
import torch
from safetensors import safe_open

from comfy_host import ExecutionFailed, build_checkpoint, sampler
from merge_core import Recipe

CKPT = "SuperMergerCheckpointMerge"


def merge_inputs(**kw):
    inputs = {"model_a": "mini_a.safetensors", "model_b": "mini_b.safetensors", "model_c": "(none)",
              "mode": "weight_sum", "calcmode": "normal", "alpha": 0.5, "beta": 0.25, "gamma": 0.3,
              "weights_alpha": "", "weights_beta": "", "elemental": "", "include_exclude": "off", "blocks": "",
              "elements": "", "adjust": "", "use_old_calc": False, "merge_vae": True, "cache_models": 2}
    inputs.update(kw)
    return inputs


def sample(model, clip, vae, extra: dict) -> dict:
    """`extra` nodes, then a 64×64 4-step render of (model, clip, vae)."""
    return {**extra, **sampler(model, clip, vae)}


def merged(**kw) -> dict:
    return sample(["m", 0], ["m", 1], ["m", 2], {"m": {"class_type": CKPT, "inputs": merge_inputs(**kw)},
                                                 "info": {"class_type": "PreviewAny", "inputs": {"source": ["m", 4]}}})


def loaded(name: str) -> dict:
    return sample(["ck", 0], ["ck", 1], ["ck", 2],
                  {"ck": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": name}}})


def save_node(source: str, filename: str, **kw) -> dict:
    inputs = {"model": [source, 0], "clip": [source, 1], "vae": [source, 2], "filename": filename,
              "destination": "checkpoints", "precision": "fp16", "prune": False, "save_metadata": True,
              "reset_clip_ids": False, "overwrite": False, "recipe": [source, 3]}
    inputs.update(kw)
    return {"class_type": "SuperMergerSave", "inputs": inputs}


def tensors(path) -> dict:
    with safe_open(str(path), "pt") as f:
        return {k: f.get_tensor(k) for k in f.keys()}, f.metadata()


def test_alpha_0_renders_model_a_and_alpha_1_model_b(host):
    a = host.image(host.run(loaded("mini_a.safetensors")))
    b = host.image(host.run(loaded("mini_b.safetensors")))
    assert not np.array_equal(a, b)
    assert np.array_equal(host.image(host.run(merged(alpha=0.0))), a)
    assert np.array_equal(host.image(host.run(merged(alpha=1.0))), b)


def test_saved_merge_reloads_to_the_same_image(host):
    """Merged in A's dtype (fp16 here), saved as fp16, loaded by core CheckpointLoaderSimple: same pixels."""
    name = f"saved/{uuid.uuid4().hex[:8]}"
    g = merged(alpha=0.3, calcmode="cosineA", weights_alpha="GRAD_V")
    g["keep"] = save_node("m", name)
    entry = host.run(g)
    in_memory = host.image(entry, "save")
    assert host.text(entry, "keep").startswith(f"saved checkpoints/{name}.safetensors")
    reloaded = host.image(host.run(loaded(f"{name}.safetensors")))
    assert np.array_equal(in_memory, reloaded)
    sd, meta = tensors(host.work / "models" / "checkpoints" / f"{name}.safetensors")
    assert {t.dtype for k, t in sd.items() if "model" in k and t.is_floating_point()} == {torch.float16}
    recipe = Recipe.from_json(meta["supermerger_recipe"])
    assert (recipe.calcmode, recipe.weights_alpha, recipe.model_a) == ("cosineA", "GRAD_V", "mini_a.safetensors")
    assert "sd_merge_recipe" in meta and "sd_merge_models" in meta


def test_history_minus_one_reproduces_the_last_merge_bit_for_bit(host):
    tag = uuid.uuid4().hex[:8]
    first = {"dice": {"class_type": "SuperMergerDiceRoll",
                      "inputs": {"mode": "R", "seed": 4242, "alpha": True, "beta": False, "custom": "", "upper": "1",
                                 "lower": "0", "clamp_upper": "", "clamp_lower": "", "round": 3,
                                 "extend_xl": False}},
             "m": {"class_type": CKPT, "inputs": merge_inputs(mode="add_difference", model_c="mini_c.safetensors",
                                                              calcmode="trainDifference", elemental="IN01:attn2:0.2",
                                                              adjust="0.5,0,0,0,0,0,0,0", weights=["dice", 0])},
             "keep": save_node("m", f"{tag}_first", precision="fp32")}
    host.run(first)
    again = {"hist": {"class_type": "SuperMergerHistory",
                      "inputs": {"id": -1, "search": "", "match": "and", "listing": 5}},
             "m": {"class_type": CKPT, "inputs": merge_inputs(recipe=["hist", 0])},
             "keep": save_node("m", f"{tag}_again", precision="fp32")}
    host.run(again)
    folder = host.work / "models" / "checkpoints"
    one, meta_one = tensors(folder / f"{tag}_first.safetensors")
    two, meta_two = tensors(folder / f"{tag}_again.safetensors")
    assert one.keys() == two.keys()
    assert all(torch.equal(one[k], two[k]) for k in one)
    assert meta_one["supermerger_recipe"] == meta_two["supermerger_recipe"]
    recipe = Recipe.from_json(meta_two["supermerger_recipe"])
    assert recipe.dice["mode"] == "R" and recipe.seed == 4242 and recipe.mode == "add_difference"
    a = tensors(folder / "mini_a.safetensors")[0]
    changed = [k for k in a if "diffusion_model" in k and not torch.equal(a[k].float(), one[k])]
    assert changed  # a real merge, not a copy of A


def test_history_search_finds_merges_and_names_its_id(host):
    g = merged(alpha=0.25, calcmode="cosineB")
    entry = host.run(g)
    merge_id = int(host.text(entry, "info"))
    find = {"hist": {"class_type": "SuperMergerHistory",
                     "inputs": {"id": -1, "search": "cosineB mini_b", "match": "and", "listing": 5}},
            "show": {"class_type": "PreviewAny", "inputs": {"source": ["hist", 1]}},
            "recipe": {"class_type": "PreviewAny", "inputs": {"source": ["hist", 0]}}}
    out = host.run(find)
    assert int(host.text(out, "show")) == merge_id
    assert Recipe.from_json(host.text(out, "recipe")).calcmode == "cosineB"


@pytest.mark.parametrize("filename", ["../../x", "/tmp/x", "a/../../x", "C:/x"])
def test_a_path_outside_the_folder_is_refused(host, filename):
    g = merged(alpha=0.5)
    g["keep"] = save_node("m", filename)
    with pytest.raises(ExecutionFailed) as err:
        host.run(g)
    msg = err.value.info["exception_message"]
    assert "SuperMergerSave" in msg and "filename" in msg and "Traceback" not in msg
    assert not list(host.work.parent.glob("x.safetensors"))


def test_an_existing_file_is_not_overwritten_without_the_flag(host):
    name = f"keep_{uuid.uuid4().hex[:8]}"
    g = merged(alpha=0.2)
    g["keep"] = save_node("m", name)
    host.run(g)
    path = host.work / "models" / "checkpoints" / f"{name}.safetensors"
    before = path.read_bytes()
    g2 = merged(alpha=0.8)
    g2["keep"] = save_node("m", name)
    with pytest.raises(ExecutionFailed) as err:
        host.run(g2)
    assert "already exists" in err.value.info["exception_message"]
    assert path.read_bytes() == before
    g2["keep"] = save_node("m", name, overwrite=True)
    host.run(g2)
    assert path.read_bytes() != before


def test_an_inpainting_merge_is_saved_under_an_inpainting_name(host):
    """SPEC §10.2: with A an inpainting model (9 input channels, B a normal one), the automatic file name ends
    in .fp16-inpainting, and the saved U-Net keeps A's 9-channel input."""
    link = host.work / "models" / "checkpoints" / "mini_inpaint.safetensors"
    if not link.exists():
        link.symlink_to(build_checkpoint("mini_sd15_inpaint", 1))
    alpha = 0.25 + uuid.uuid4().int % 1000 / 4000  # a name no earlier run of this server has written
    g = {"m": {"class_type": CKPT, "inputs": merge_inputs(model_a="mini_inpaint.safetensors", alpha=alpha)},
         "keep": save_node("m", "")}
    text = host.text(host.run(g), "keep")
    name = text.removeprefix("saved checkpoints/")
    assert name.endswith(".fp16-inpainting.safetensors"), text
    sd, _meta = tensors(host.work / "models" / "checkpoints" / name)
    assert sd["model.diffusion_model.input_blocks.0.0.weight"].shape[1] == 9


def test_unknown_checkpoint_in_a_recipe_is_a_clear_error(host):
    bad = Recipe(model_a="nope.safetensors", model_b="mini_b.safetensors").to_json()
    g = {"txt": {"class_type": "PrimitiveStringMultiline", "inputs": {"value": bad}},
         "m": {"class_type": CKPT, "inputs": merge_inputs(recipe=["txt", 0])},
         "show": {"class_type": "PreviewAny", "inputs": {"source": ["m", 4]}}}
    with pytest.raises(ExecutionFailed) as err:
        host.run(g)
    msg = err.value.info["exception_message"]
    assert CKPT in msg and "nope.safetensors" in msg


def test_images_carry_the_merge_id_and_recipe_in_png_info(host):
    from PIL import Image

    g = merged(alpha=0.35)
    first = host.run(g)
    plain, merge_id = host.image(first, "save"), int(host.text(first, "info"))
    g["save"] = {"class_type": "SuperMergerSaveImage",
                 "inputs": {"images": ["dec", 0], "filename_prefix": f"ids/{uuid.uuid4().hex}",
                            "merge_id": ["m", 4], "recipe": ["m", 3], "draw_id": False}}
    entry = host.run(g)  # the merge is cached: the same merge, the same ID
    saved = entry["outputs"]["save"]["images"][0]
    png = Image.open(host.work / "output" / saved["subfolder"] / saved["filename"])
    assert int(png.text["supermerger_id"]) == merge_id
    import json

    assert Recipe.from_dict(json.loads(png.text["supermerger_recipe"])).alpha == 0.35
    assert "prompt" in png.text  # ComfyUI's own PNG info is still there
    assert np.array_equal(np.asarray(png.convert("RGB")), plain)
    g["save"]["inputs"]["draw_id"] = True
    drawn = host.image(host.run(g), "save")
    changed = np.argwhere((drawn != plain).any(axis=-1))
    assert len(changed) and changed[:, 0].max() < 32 and changed[:, 1].max() < 48  # only the top-left corner


def test_inputs_are_cached_between_runs_and_cache_0_clears(host):
    """SPEC §12: with cache_models 2, A and B are read from their files once; later merges (a slider moved)
    take them from RAM and give the same result as an uncached merge."""
    def run(**kw):
        start = len(host.log.read_text())
        entry = host.run(merged(**kw))
        lines = [line for line in host.log.read_text()[start:].splitlines() if "SuperMerger: model" in line]
        return host.image(entry, "save"), lines

    _, lines = run(alpha=0.11, cache_models=0)
    assert len(lines) == 2 and all(line.endswith("from its file") for line in lines), lines
    _, lines = run(alpha=0.12, cache_models=2)
    assert all(line.endswith("from its file (now cached)") for line in lines), lines
    cached_image, lines = run(alpha=0.13, cache_models=2)
    assert len(lines) == 2 and all(line.endswith("from the cache") for line in lines), lines
    fresh_image, lines = run(alpha=0.13, cache_models=0)
    assert all(line.endswith("from its file") for line in lines), lines
    assert np.array_equal(cached_image, fresh_image)


def test_history_lists_checkpoint_merges_unless_asked_for_in_graph_ones(host):
    from comfy_host import graph

    ckpt = int(host.text(host.run(merged(alpha=0.61)), "info"))
    host.run(graph("SuperMergerWeightSum", {"alpha": 0.62}))  # recorded as an in-graph merge

    def last(files_only):
        out = host.run({"hist": {"class_type": "SuperMergerHistory",
                                 "inputs": {"id": -1, "search": "", "match": "and", "listing": 3,
                                            "files_only": files_only}},
                        "show": {"class_type": "PreviewAny", "inputs": {"source": ["hist", 0]}}})
        return Recipe.from_json(host.text(out, "show"))

    assert last(True).alpha == 0.61 and last(True).model_a == "mini_a.safetensors"
    newest = last(False)
    assert newest.alpha == 0.62 and newest.model_a == "mini_a.safetensors"  # named by the loader feeding it
    assert ckpt > 0


def _in_graph_save(alpha: float, loaders: bool = True, metadata: bool = True) -> dict:
    """Loaders → Weight Sum (MODEL + CLIP) → Save Checkpoint with its filename left empty."""
    g = {"a": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "mini_a.safetensors"}},
         "b": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "mini_b.safetensors"}}}
    model_b = ["b", 0]
    if not loaders:  # B through an Adjust node: not a checkpoint file any more
        g["adj"] = {"class_type": "SuperMergerAdjust", "inputs": {"model": ["b", 0], "in": 1.0, "out": 0.0,
                                                                  "out2": 0.0, "cont": 0.0, "bri": 0.0, "col1": 0.0,
                                                                  "col2": 0.0, "col3": 0.0}}
        model_b = ["adj", 0]
    g["m"] = {"class_type": "SuperMergerWeightSum", "inputs": {
        "model_a": ["a", 0], "model_b": model_b, "clip_a": ["a", 1], "clip_b": ["b", 1], "alpha": alpha,
        "beta": 0.25, "calcmode": "normal"}}
    g["save"] = {"class_type": "SuperMergerSave", "inputs": {
        "model": ["m", 0], "clip": ["m", 1], "vae": ["a", 2], "filename": "", "destination": "output",
        "precision": "fp16", "prune": False, "save_metadata": metadata, "reset_clip_ids": True, "overwrite": False,
        "recipe": ["m", 2]}}
    return g


def test_an_in_graph_merge_saved_with_an_empty_filename_is_named_from_its_loaders_and_never_fails(host):
    alpha = 0.123 + uuid.uuid4().int % 1000 / 1e6  # a name no earlier run has written
    second = host.run(_in_graph_save(alpha, metadata=False))
    first = host.run(_in_graph_save(alpha))  # queued again with an input changed (ComfyUI reuses an unchanged run)
    paths = [r["outputs"]["save"]["text"][0].removeprefix("saved output/") for r in (second, first)]
    stem = f"mini_ax{round(1 - alpha, 3)}+mini_bx{round(alpha, 3)}"
    assert paths == [f"{stem}.fp16.safetensors", f"{stem}_2.fp16.safetensors"]
    out, meta = tensors(host.work / "output" / paths[1])  # the one with metadata
    assert Recipe.from_json(meta["supermerger_recipe"]).model_b == "mini_b.safetensors"
    assert "mini_b.safetensors" in meta["sd_merge_models"]  # SuperMerger's metadata: the inputs' hashes
    # SD1's CLIP position ids are saved (ComfyUI's own saving leaves them out), so Reset CLIP ids applies
    ids = out["cond_stage_model.transformer.text_model.embeddings.position_ids"]
    assert ids.dtype == torch.int64 and ids.tolist() == [list(range(77))]
    # B not straight from a loader: the merge is named by its ID in the history
    third = host.run(_in_graph_save(alpha, loaders=False))
    assert third["outputs"]["save"]["text"][0].startswith("saved output/merge_")
