"""Include / Exclude (SPEC §5): which keys a merge may touch. The first matching rule decides."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from .adjust import ADJUST_KEYS
from .errors import MergeError
from .families import BlockRef, Family

PSEUDO_BLOCKS = ("Adjust", "VAE", "print")


@dataclass(frozen=True)
class IncludeExclude:
    include: bool
    blocks: tuple
    elements: tuple

    def matches(self, ref: BlockRef, key: str) -> Optional[str]:
        """The rule that matches `key` (block, fine block, Adjust, element or VAE), or None."""
        if ref.coarse in self.blocks:
            return ref.coarse
        if ref.fine in self.elements or ref.fine in self.blocks:
            return ref.fine
        if "Adjust" in self.blocks and key in ADJUST_KEYS:
            return "Adjust"
        for element in self.elements:
            if element in key:
                return element
        if "VAE" in self.blocks and "first_stage_model" in key:
            return "VAE"
        return None

    def unmatched(self, seen: list) -> list:
        """Notes for the blocks and elements that match none of the keys in `seen` ((BlockRef, key) pairs): a
        typo in Include/Exclude would otherwise change nothing and say nothing."""
        notes = []
        for block in (b for b in self.blocks if b != "print"):
            if not any(IncludeExclude(self.include, (block,), ()).matches(ref, key) for ref, key in seen):
                notes.append(f"include/exclude block '{block}' matches no key of this model")
        for element in self.elements:
            if not any(IncludeExclude(self.include, (), (element,)).matches(ref, key) for ref, key in seen):
                notes.append(f"include/exclude element '{element}' matches no key of this model (key names: see "
                             "the Model Elements node or `keys`)")
        return notes

    def skips(self, ref: BlockRef, key: str) -> bool:
        """Include: keys that match are merged, others stay A. Exclude: keys that match stay A."""
        matched = self.matches(ref, key) is not None
        return not matched if self.include else matched


def compile_inex(settings: dict, family: Family) -> Optional[IncludeExclude]:
    """None when off or empty (SuperMerger then merges every key)."""
    if settings["mode"] == "off" or not (settings["blocks"] or settings["elements"]):
        return None
    valid = set(family.slots) | set(family.extended or ()) | set(PSEUDO_BLOCKS)
    for block in settings["blocks"]:
        if block not in valid:
            raise MergeError("include_exclude.blocks", f"unknown block '{block}' for {family.label}; use "
                                                       f"{', '.join(family.blocks)}, Adjust or VAE (fine "
                                                       "blocks and key substrings go in elements)")
    return IncludeExclude(settings["mode"] == "include", tuple(settings["blocks"]), tuple(settings["elements"]))
