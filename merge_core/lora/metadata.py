"""Metadata of merged LoRA files (SPEC §13.10), the standard kohya / SAI model-spec fields, and the
additional-networks hashes kohya's writer adds to every LoRA.

Modes: `create new` and `create new without output_name` keep only the first LoRA's basic `ss_*` fields;
`merge` and `save all` keep the first LoRA's dict and add every input's dict as `sshs_cp<i>` (`merge`
also unions the inputs' `ss_tag_frequency`); `use first lora` keeps the first LoRA's dict. Every input
dict carries `sshs_ratio`, `sshs_blocks` and `ss_output_name`. Then `ss_output_name` (the output name,
left out by "without output_name"), `ss_mixed_precision`, and the additional-networks hashes
`sshs_model_hash` / `sshs_legacy_hash` computed with only the `ss_*` fields, as kohya's tools do.
"""
from __future__ import annotations

import hashlib
import json
import time
from typing import Optional

from .. import precision as precisions
from ..sources import SafetensorsFile
from ..writer import header_bytes, tensor_bytes

MODES = ("create new", "create new without output_name", "merge", "save all", "use first lora")
MINIMUM = ("ss_network_module", "ss_network_alpha", "ss_network_dim", "ss_v2", "ss_sd_model_name",
           "ss_base_model_version")

# family → (ss_base_model_version, modelspec architecture, prediction type, resolution). SD1 LoRAs are
# epsilon-prediction (SuperMerger's extraction marks them v, SPEC §17 #16). SD2 depends on the model
# (512 epsilon, 768 v): its fields are only written when the caller knows.
FAMILY_SPEC = {
    "sd1": ("sd_v1", "stable-diffusion-v1/lora", "epsilon", "512x512"),
    "sd2": (None, None, None, None),
    "sdxl": ("sdxl_base_v1-0", "stable-diffusion-xl-v1-base/lora", "epsilon", "1024x1024"),
    "flux": ("flux1", "flux-1-dev/lora", None, "1024x1024"),
}
SD2_SPEC = {False: ("sd_v2", "stable-diffusion-v2-512/lora", "epsilon", "512x512"),
            True: ("sd_v2_v", "stable-diffusion-v2-768-v/lora", "v", "768x768")}
# SAI model-spec `implementation`: whose key names the LoRA uses. kohya names SD1/SD2 LoRA modules by their
# diffusers paths ("diffusers") and SDXL ones by the SGM checkpoint paths (Stability's repository).
STABILITY = "https://github.com/Stability-AI/generative-models"
IMPLEMENTATION = {"sd1": "diffusers", "sd2": "diffusers", "sdxl": STABILITY,
                  "flux": "https://github.com/black-forest-labs/flux"}
_LEGACY_AT, _LEGACY_SIZE = 0x100000, 0x10000  # the web-ui's old hash: 64 KiB at 1 MiB


def standard_metadata(family: str, title: str, dim=None, alpha=None, network_module: str = "networks.lora",
                      v_prediction: Optional[bool] = None, implementation: Optional[str] = None) -> dict:
    """kohya `ss_*` and SAI `modelspec.*` fields for a LoRA of `family` (values as strings). `implementation`
    overrides the family's (a LoRA named by checkpoint paths is Stability's layout whatever its family)."""
    version, arch, prediction, resolution = (SD2_SPEC[v_prediction] if family == "sd2" and v_prediction is not None
                                             else FAMILY_SPEC[family])
    meta = {"ss_network_module": network_module, "ss_v2": str(family == "sd2"),
            "modelspec.sai_model_spec": "1.0.0",
            "modelspec.implementation": implementation or IMPLEMENTATION[family],
            "modelspec.title": title, "modelspec.date": time.strftime("%Y-%m-%dT%H:%M:%S")}
    if dim is not None:
        meta["ss_network_dim"] = str(dim)
        meta["ss_network_alpha"] = str(alpha if alpha is not None else dim)
    for key, value in (("ss_base_model_version", version), ("modelspec.architecture", arch),
                       ("modelspec.prediction_type", prediction), ("modelspec.resolution", resolution)):
        if value is not None:
            meta[key] = value
    return meta


def input_metadata(file_metadata: dict, entry) -> dict:
    """One input LoRA's dict as the merge records it (SPEC §13.10)."""
    meta = dict(file_metadata)
    meta["sshs_ratio"] = entry.ratio_text.strip()
    meta["sshs_blocks"] = ",".join(str(float(w)) for w in entry.weights)
    meta["ss_output_name"] = entry.name
    return meta


def _union_tag_frequency(target: dict, other: dict) -> None:
    """Add `other`'s datasets missing from `target`'s ss_tag_frequency (SuperMerger's intent for 'merge';
    its code compares JSON texts, so it never happens there)."""
    try:
        mine = json.loads(target.get("ss_tag_frequency", "{}"))
        theirs = json.loads(other.get("ss_tag_frequency", "{}"))
    except (TypeError, ValueError):
        return
    if isinstance(mine, dict) and isinstance(theirs, dict):
        for dataset, tags in theirs.items():
            mine.setdefault(dataset, tags)
        if mine:
            target["ss_tag_frequency"] = json.dumps(mine)


def merged_metadata(inputs: list, mode: str, output_name: str, precision: str, family: str,
                    network_module: str = "networks.lora", rank: Optional[int] = None) -> dict:
    """The merged file's metadata before hashing. `inputs`: the `input_metadata` dicts, in order. When the
    merge re-decomposed to `rank`, `ss_network_dim`/`ss_network_alpha` say so (SuperMerger keeps the first
    LoRA's values); standard fields the inputs lack are filled in from the family."""
    if mode not in MODES:
        raise ValueError(f"metadata mode {mode!r}; one of {', '.join(MODES)}")
    first = inputs[0]
    if mode == "use first lora":
        meta = dict(first)
    elif mode.startswith("create new"):
        meta = {k: first[k] for k in MINIMUM if k in first}
    else:
        meta = dict(first)
        found_module = None
        for i, other in enumerate(inputs):
            meta[f"sshs_cp{i}"] = json.dumps(other, ensure_ascii=False)
            if found_module is None and "ss_network_module" in other:
                found_module = other["ss_network_module"]
            if mode == "merge" and i > 0:
                _union_tag_frequency(meta, other)
        if found_module is not None:
            meta["ss_network_module"] = found_module
    if rank is not None:
        meta["ss_network_dim"] = meta["ss_network_alpha"] = str(rank)
    fresh = mode.startswith("create new")  # a new file also gets the model-spec fields it lacks
    for key, value in standard_metadata(family, output_name, network_module=network_module).items():
        if key.startswith("ss_") or fresh:
            meta.setdefault(key, value)
    if mode.endswith("without output_name"):
        meta.pop("ss_output_name", None)
    else:
        meta["ss_output_name"] = output_name
    meta["ss_mixed_precision"] = precisions.lora_word(precision)
    return {k: v if isinstance(v, str) else json.dumps(v) for k, v in meta.items()}


def safetensors_header(entries: list, metadata: Optional[dict]) -> bytes:
    """The header SafetensorsWriter writes for `entries` [(key, dtype, shape)] (8-byte length + JSON)."""
    return header_bytes(entries, metadata)[0]


class AddnetHasher:
    """kohya's `sshs_model_hash` and `sshs_legacy_hash`, computed while a file's tensor bytes stream past.

    `sshs_model_hash`: sha256 of everything after the header (what sd-webui-additional-networks computes for
    a safetensors file). `sshs_legacy_hash`: sha256 of 64 KiB at offset 1 MiB of the file as it would be
    with only the `ss_*` metadata (kohya keeps the hashes independent of later metadata edits that way),
    first 8 hex digits. `entries` [(key, dtype, shape)] in the order the bytes will come."""

    def __init__(self, entries: list, metadata: Optional[dict]):
        ss_only = {k: v for k, v in (metadata or {}).items() if k.startswith("ss_")}
        head = safetensors_header(entries, ss_only)
        self._payload = hashlib.sha256()
        self._window = bytearray(head[_LEGACY_AT:_LEGACY_AT + _LEGACY_SIZE])
        self._pos = len(head)

    def update(self, data) -> None:
        view = memoryview(data).cast("B")
        self._payload.update(view)
        lo, hi, end = _LEGACY_AT, _LEGACY_AT + _LEGACY_SIZE, self._pos + view.nbytes
        if end > lo and self._pos < hi:
            self._window += view[max(lo - self._pos, 0):min(hi - self._pos, view.nbytes)]
        self._pos = end

    def hashes(self) -> dict:
        return {"sshs_model_hash": self._payload.hexdigest(),
                "sshs_legacy_hash": hashlib.sha256(bytes(self._window)).hexdigest()[:8]}


# What a file's header holds before its hashes are known: the same lengths, so the final header fits exactly.
HASH_PLACEHOLDERS = {"sshs_model_hash": "0" * 64, "sshs_legacy_hash": "0" * 8}


def with_hashes(metadata: dict, tensors: dict) -> dict:
    """`metadata` plus the hashes of the file SafetensorsWriter writes for `tensors` (in their order)."""
    hasher = AddnetHasher([(k, t.dtype, tuple(t.shape)) for k, t in tensors.items()], metadata)
    for t in tensors.values():
        hasher.update(tensor_bytes(t))
    return {**metadata, **hasher.hashes()}


def file_hashes(path) -> dict:
    """The two hashes of a safetensors file on disk, computed as kohya's writer computes them when it writes
    the file; a file that carries correct ones (`sshs_*` in its metadata) has these values."""
    with SafetensorsFile(path) as f:
        keys = sorted(f.keys(), key=lambda k: f.span(k)[0])  # data order
        hasher = AddnetHasher([(k, f.dtype(k), f.shape(k)) for k in keys], f.metadata())
    with open(path, "rb") as raw:
        raw.seek(8 + int.from_bytes(raw.read(8), "little"))
        while chunk := raw.read(8 << 20):
            hasher.update(chunk)
    return hasher.hashes()
