"""A costly lazy merge (smoothAdd) in ComfyUI's two ways of loading a model, in ComfyUI's own python
(tests/host/lowvram_probe.py): loaded whole, each key is computed once and no copy is kept (a copy would double
the model's memory); in low-VRAM mode, where ComfyUI patches the weights on every forward pass, each key is
computed at most twice, whatever the number of steps, and gives the same output as the whole model; an
Interrupt in the middle of a low-VRAM load leaves model A as it was."""
import json
import subprocess
import sys

from comfy_host import COMFY, HERE, build_checkpoint


def test_smooth_add_computed_once_whole_at_most_twice_in_low_vram_mode_and_interrupts_leave_a_intact():
    files = [str(build_checkpoint("mini_sd15", seed)) for seed in (1, 2, 3)]
    run = subprocess.run([sys.executable, str(HERE / "lowvram_probe.py"), *files], capture_output=True, text=True,
                         cwd=COMFY, timeout=900)
    assert run.returncode == 0, run.stderr[-3000:]
    r = json.loads(run.stdout.strip().splitlines()[-1])
    n = r["merged_keys"]
    assert n > 10  # OUT03 of the mini U-Net
    assert r["whole"] == {"computations": n, "cached": 0}
    assert r["lowvram_mode"] is True  # the probe really loaded it in low-VRAM mode
    assert r["lowvram"] == {"computations": 2 * n, "distinct_keys": n, "cached": n}  # 4 forward passes
    assert r["same_output_every_pass"] and r["lowvram_equals_whole"]
    # Interrupt in the middle of a low-VRAM load of a merge: model A, loaded the same way next, is still A
    assert r["interrupted_during_load"] is True
    assert r["a_intact_after_interrupted_load"] is True
