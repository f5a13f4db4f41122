"""Host tests run the nodes in a real ComfyUI; without COMFYUI_PATH they are skipped, saying why."""
from pathlib import Path

import pytest

from comfy_host import COMFY, SKIP_REASON, start

HERE = Path(__file__).resolve().parent


def pytest_collection_modifyitems(config, items):
    if COMFY:
        return
    for item in items:
        if HERE in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.skip(reason=SKIP_REASON))


@pytest.fixture(scope="session")
def host(tmp_path_factory):
    yield from start(tmp_path_factory)
