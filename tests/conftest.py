import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
for p in (ROOT, Path(__file__).resolve().parent):
    if str(p) not in sys.path:
        sys.path.insert(0, str(p))

from merge_core.synthetic import tiny_sd1, tiny_sdxl  # noqa: E402


@pytest.fixture(autouse=True)
def _hash_cache(tmp_path_factory, monkeypatch):
    """Tests never touch the user's hash cache or merge history."""
    monkeypatch.setenv("SUPERMERGER_CACHE_DIR", str(tmp_path_factory.mktemp("cache")))
    monkeypatch.setenv("SUPERMERGER_HISTORY", str(tmp_path_factory.mktemp("history") / "history.jsonl"))


@pytest.fixture(scope="session")
def sd1():
    return [tiny_sd1(seed) for seed in (1, 2, 3)]


@pytest.fixture(scope="session")
def sdxl():
    return [tiny_sdxl(seed) for seed in (1, 2, 3)]
