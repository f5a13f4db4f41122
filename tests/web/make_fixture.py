"""Write tests/web/fixtures/editor.json: what the /supermerger/editor route serves (block tables and presets),
for the JavaScript unit tests. tests/test_web_api.py fails when the fixture no longer matches the engine.

    .venv/bin/python tests/web/make_fixture.py
"""
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
FIXTURE = Path(__file__).resolve().parent / "fixtures" / "editor.json"


def fixture_text() -> str:
    sys.path.insert(0, str(ROOT))
    from merge_core.editor import editor_data

    return json.dumps(editor_data(), indent=1, ensure_ascii=False) + "\n"


if __name__ == "__main__":
    FIXTURE.write_text(fixture_text(), encoding="utf-8")
    print(f"wrote {FIXTURE.relative_to(ROOT)}")
