"""The editor's JSON routes as ComfyUI serves them (registered by the pack at load, under /supermerger and
/api/supermerger): answers, refusals as {"error"} with their status, and GET only."""
import json
import urllib.error
import urllib.request

import pytest


def fetch(host, path, method="GET"):
    req = urllib.request.Request(host.url + path, method=method)
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        body = e.read()
        return e.code, json.loads(body) if body.startswith(b"{") else body


def test_block_tables_presets_and_a_checkpoints_family(host):
    status, data = fetch(host, "/api/supermerger/editor")
    assert status == 200 and len(data["families"]["sd1"]["blocks"]) == 26
    assert any(p["name"] == "GRAD_V" for p in data["presets"])
    assert fetch(host, "/supermerger/family?name=mini_a.safetensors") == \
        (200, {"name": "mini_a.safetensors", "family": "sd1", "label": "Stable Diffusion 1.x"})


@pytest.mark.parametrize("path, status, words", [
    ("/api/supermerger/family?name=../models/checkpoints/mini_a.safetensors", 404, "not in ComfyUI's checkpoints"),
    ("/api/supermerger/family?name=mini_a.safetensors&folder=..", 400, "folder must be one of"),
    ("/api/supermerger/history?limit=1000", 400, "limit must be between 1 and 100"),
    ("/api/supermerger/history?match=xor", 400, "match must be"),
    ("/api/supermerger/history/entry?id=abc", 400, "whole number"),
    ("/api/supermerger/history/entry?id=999999", 404, "no merge with ID 999999|the merge history is empty"),
    ("/api/supermerger/history/weights?ids=", 400, "ids is required"),
])
def test_bad_requests_get_one_clear_sentence(host, path, status, words):
    got, body = fetch(host, path)
    assert got == status and any(w in body["error"] for w in words.split("|")), body


def test_the_routes_only_read(host):
    for path in ("/api/supermerger/history", "/api/supermerger/editor"):
        assert fetch(host, path, "POST")[0] == 405
