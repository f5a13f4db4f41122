"""Merge history (SPEC §11): every merge appends its full Recipe under a sequential ID, so any earlier merge
can be run again exactly, by ID (−1 = the last, −2 = the one before) or found by searching.

One JSON object per line (`history.jsonl`): appends are a single write under an exclusive file lock, so
concurrent prompts and CLI runs never interleave or reuse an ID, and a reader never sees half a record.
SuperMerger's own `mergehistory.csv` can be imported; its rows become recipes (models by short hash).
"""
from __future__ import annotations

import ast
import csv
import json
import os
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Optional

from .errors import MergeError
from .recipe import Recipe

FILE_NAME = "history.jsonl"
TIME_FORMAT = "%Y.%m.%d %H.%M.%S"  # SuperMerger's


def default_path() -> Path:
    """The CLI's history file: $SUPERMERGER_HISTORY, else the user's data folder. (In ComfyUI the nodes keep
    theirs in ComfyUI's user folder.)"""
    env = os.environ.get("SUPERMERGER_HISTORY")
    if env:
        return Path(env).expanduser()
    base = os.environ.get("XDG_DATA_HOME") or os.path.join(os.path.expanduser("~"), ".local", "share")
    return Path(base) / "supermerger-comfy" / FILE_NAME


@dataclass(frozen=True)
class Entry:
    id: int
    time: str
    name: str
    recipe: Recipe
    models: dict = field(default_factory=dict)  # role → {"name", "sha256"} when known
    origin: str = ""
    family: str = ""  # the model family the merge ran on ("" when not known, e.g. imported rows)

    def to_dict(self) -> dict:
        return {"id": self.id, "time": self.time, "name": self.name, "recipe": self.recipe.to_dict(),
                "models": self.models, "origin": self.origin, "family": self.family}

    @classmethod
    def from_dict(cls, data: dict, where: str) -> "Entry":
        try:
            return cls(int(data["id"]), str(data["time"]), str(data["name"]), Recipe.from_dict(data["recipe"]),
                       dict(data.get("models") or {}), str(data.get("origin", "")), str(data.get("family", "")))
        except (KeyError, TypeError, ValueError) as e:
            raise MergeError(where, f"not a history record ({e})") from None
        except MergeError as e:
            raise MergeError(where, f"its recipe is invalid: {e}") from None

    def search_text(self) -> str:
        r = self.recipe
        models = " ".join(str(m.get("name") or "") for m in self.models.values())
        parts = [str(self.id), self.time, self.name, r.model_a, r.model_b, r.model_c or "", models, r.mode,
                 r.calcmode, r.weights_alpha or "", r.weights_beta or "", r.elemental, r.adjust]
        return " ".join(parts).lower()


@contextmanager
def _locked(path: Path):
    """An exclusive lock on `<history>.lock` (POSIX flock or Windows msvcrt), held for one append."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_name(path.name + ".lock"), "a+b") as lock:
        if os.name == "nt":
            import msvcrt

            lock.seek(0)
            while True:
                try:
                    msvcrt.locking(lock.fileno(), msvcrt.LK_LOCK, 1)
                    break
                except OSError:  # LK_LOCK gives up after ~10 s; keep waiting
                    continue
            try:
                yield
            finally:
                lock.seek(0)
                msvcrt.locking(lock.fileno(), msvcrt.LK_UNLCK, 1)
        else:
            import fcntl

            fcntl.flock(lock.fileno(), fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock.fileno(), fcntl.LOCK_UN)


class History:
    def __init__(self, path=None):
        self.path = Path(path) if path is not None else default_path()

    def entries(self) -> list:
        """All records, oldest first. A torn last line (a crash mid-write) is ignored; any other bad line is
        an error naming the line."""
        if not self.path.exists():
            return []
        lines = self.path.read_text(encoding="utf-8").splitlines()
        out = []
        for n, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                data = json.loads(line)
            except json.JSONDecodeError:
                if n == len(lines):
                    break
                raise MergeError(f"history {self.path.name}", f"line {n} is not valid JSON") from None
            out.append(Entry.from_dict(data, f"history {self.path.name} line {n}"))
        return out

    def append(self, recipe: Recipe, name: str = "", models: Optional[dict] = None, origin: str = "",
               family: str = "") -> Entry:
        """Record a merge; returns its entry with the new ID."""
        with _locked(self.path):
            last = self.entries()
            entry = Entry(last[-1].id + 1 if last else 1, time.strftime(TIME_FORMAT), name, recipe,
                          models or {}, origin, family)
            self._write_lines([json.dumps(entry.to_dict(), ensure_ascii=False)])
        return entry

    def _write_lines(self, lines: list) -> None:
        # Called under the lock. One write of whole lines in append mode: readers see all of it or none.
        self._drop_torn_tail()
        with open(self.path, "a", encoding="utf-8", newline="\n") as f:
            f.write("".join(line + "\n" for line in lines))
            f.flush()
            os.fsync(f.fileno())

    def _drop_torn_tail(self) -> None:
        """A record cut short by a crash is never completed; drop it so the file stays one record per line."""
        if not self.path.exists() or self.path.stat().st_size == 0:
            return
        with open(self.path, "r+b") as f:
            f.seek(-1, os.SEEK_END)
            if f.read(1) == b"\n":
                return
            f.seek(0)
            data = f.read()
            f.truncate(data.rfind(b"\n") + 1)

    def get(self, merge_id: int) -> Entry:
        """By ID; −1 is the last merge, −2 the one before (SuperMerger's numbering)."""
        entries = self.entries()
        if not entries:
            raise MergeError("id", f"the merge history ({self.path}) is empty")
        if merge_id < 0:
            if -merge_id > len(entries):
                raise MergeError("id", f"{merge_id} goes back further than the history's {len(entries)} merges")
            return entries[merge_id]
        for e in entries:
            if e.id == merge_id:
                return e
        raise MergeError("id", f"no merge with ID {merge_id} (IDs {entries[0].id}–{entries[-1].id})")

    def search(self, words: str, match: str = "and") -> list:
        """Entries (newest first) whose text holds all (`and`) or any (`or`) of the space-separated words,
        case-insensitively."""
        return matching(self.entries(), words, match)

    def import_supermerger_csv(self, csv_path) -> list:
        """Append the rows of SuperMerger's `mergehistory.csv` as new entries (new IDs; the old ID is kept in
        the name). Returns the new entries."""
        rows = _read_supermerger_csv(Path(csv_path))
        with _locked(self.path):
            last = self.entries()
            next_id = last[-1].id + 1 if last else 1
            new = []
            for row in rows:
                recipe, models, old_id, when, name = row
                new.append(Entry(next_id, when, f"{name} (SuperMerger ID {old_id})", recipe, models, "supermerger"))
                next_id += 1
            if new:
                self._write_lines([json.dumps(e.to_dict(), ensure_ascii=False) for e in new])
        return new


def matching(entries: list, words: str, match: str = "and") -> list:
    """The entries (newest first) whose text holds all (`and`) or any (`or`) of the space-separated words,
    case-insensitively; `entries` oldest first, as `History.entries` gives them."""
    if match not in ("and", "or"):
        raise MergeError("match", f"'{match}' is not 'and' or 'or'")
    terms = [w.lower() for w in words.split()]
    test = all if match == "and" else any
    return [e for e in reversed(entries) if not terms or test(t in e.search_text() for t in terms)]


def table(entries: Iterable[Entry]) -> str:
    """A compact listing, one entry per line."""
    lines = []
    for e in entries:
        r = e.recipe
        lines.append(f"{e.id:>5}  {e.time}  {r.mode}/{r.calcmode}  {e.name}")
    return "\n".join(lines)


# SuperMerger's CSV ------------------------------------------------------------------------------------
# Row fields (SPEC §11): ID, time, name, weights_a, weights_b, hash A, hash B, hash C, alpha, beta, mode,
# useblocks, custom_name, save_sets, id_sets, deep, calcmode, seed, fine, opt_value, inex, ex_blocks, ex_elems
CSV_FIELDS = 23


def _literal(text: str, default):
    text = (text or "").strip()
    if not text:
        return default
    try:
        return ast.literal_eval(text)  # Python reprs of lists; literal_eval runs no code
    except (ValueError, SyntaxError):
        return default


def _read_supermerger_csv(path: Path) -> list:
    try:
        with open(path, newline="", encoding="utf-8") as f:
            rows = list(csv.reader(f))
    except OSError as e:
        raise MergeError(str(path), f"cannot be read ({e.strerror})") from None
    out = []
    for n, row in enumerate(rows[1:], 2):
        if not row or not row[0].strip().isdigit():
            continue
        row = row + [""] * (CSV_FIELDS - len(row))
        (old_id, when, name, wa, wb, ha, hb, hc, alpha, beta, mode, useblocks, _custom, save_sets, _id_sets,
         deep, calcmode, seed, fine, opt, inex, ex_blocks, ex_elems) = row[:CSV_FIELDS]
        try:
            mbw = useblocks.strip() == "True"
            sets = _literal(save_sets, [])
            blocks = _literal(ex_blocks, [])
            elements = [e.strip() for e in (ex_elems or "").split(",") if e.strip()]
            recipe = Recipe(
                model_a=ha.strip() or "?", model_b=hb.strip() or "?",
                model_c=hc.strip() or None, mode=mode or "Weight sum", calcmode=calcmode.strip() or "normal",
                alpha=float(alpha or 0.5), beta=float(beta or 0.25), gamma=float(opt or 0.3),
                weights_alpha=wa if mbw and wa.strip() else None,
                weights_beta=wb if mbw and wb.strip() else None,
                elemental=(deep or "").strip(), adjust=(fine or "").strip(),
                include_exclude={"mode": (inex or "Off").strip().lower() or "off",
                                 "blocks": [b for b in blocks if isinstance(b, str)], "elements": elements},
                seed=int(seed) if seed.strip().lstrip("-").isdigit() else -1,
                use_old_calc="use old calc method" in sets)
        except (ValueError, MergeError) as e:
            raise MergeError(f"{path.name} line {n}", f"cannot be read as a merge ({e})") from None
        models = {role: {"name": None, "sha256": h.strip()} for role, h in (("a", ha), ("b", hb), ("c", hc))
                  if h.strip()}
        out.append((recipe, models, old_id, when, name))
    return out



def record(history: Optional[History], plan, inputs, name: str, origin: str,
           absolute_paths: bool = True) -> Optional[Entry]:
    """Append a finished merge: the plan's recipe (seed as drawn) and each input's sha256 (cached by
    merge_core.hashing). With `absolute_paths` (the CLI) the models are stored as full paths, so the entry
    reruns from anywhere; ComfyUI stores its checkpoint names instead."""
    if history is None:
        return None
    from .hashing import sha256

    models, paths = {}, {}
    for role, src in (("a", inputs.a), ("b", inputs.b), ("c", inputs.c)):
        path = getattr(src, "path", None) if src is not None else None
        if path is not None:
            paths[f"model_{role}"] = str(Path(path).resolve())
            models[role] = {"name": src.name, "sha256": sha256(path)}
    recipe = plan.recipe.replace(**paths) if absolute_paths else plan.recipe
    return history.append(recipe, name, models, origin, plan.family.name)
