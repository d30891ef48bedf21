"""Shared test helpers: exact string enumeration, and loading a checkpoint as remote code."""
import os
import subprocess
import sys
import textwrap

import torch


def assert_loads_without_selectivbench(ckpt, model, tmp_path, vocab_size: int):
    g = torch.Generator().manual_seed(3)
    ids = torch.randint(0, vocab_size + 1, (2, 19), generator=g)
    noise = torch.rand(2, 19, vocab_size, generator=g) * 0.1
    with torch.no_grad():
        expected = model.eval()(ids, input_noise=noise).logits
    io = tmp_path / "io.pt"
    torch.save({"ids": ids, "noise": noise, "logits": expected}, io)
    script = textwrap.dedent(f"""
        import sys
        sys.modules["selectivbench"] = None  # any import of it fails: the checkpoint must stand alone
        import torch
        from transformers import AutoModel, AutoModelForTokenClassification
        io = torch.load({str(io)!r})
        m = AutoModelForTokenClassification.from_pretrained({str(ckpt)!r}, trust_remote_code=True).eval()
        assert "selectivbench" not in type(m).__module__.split(".")[0], type(m).__module__
        with torch.no_grad():
            assert torch.equal(m(io["ids"], input_noise=io["noise"]).logits, io["logits"])
        base = AutoModel.from_pretrained({str(ckpt)!r}, trust_remote_code=True)
        print("OK", type(m).__name__, type(base).__name__)
    """)
    env = {**os.environ, "HF_MODULES_CACHE": str(tmp_path / "modules")}
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, cwd=tmp_path)
    assert run.returncode == 0, run.stderr[-3000:]
    assert "OK SelectivBenchForTokenClassification SelectivBenchModel" in run.stdout


def complete_strings(g, max_len: int) -> dict:
    """Every complete string of at most max_len elements with its probability under the rejection
    law: a uniform start, uniform out-edges, conditioned on reaching '#' in time (SPEC §2)."""
    out = {}

    def walk(string, prob):
        s = string[-1]
        if s == 0:
            out[tuple(string)] = prob
        elif len(string) < max_len:
            nxt = g.next_state[s][g.next_state[s] >= 0].tolist()
            for t in nxt:
                walk(string + [t], prob / len(nxt))

    for s0 in g.start_states.tolist():
        walk([s0], 1.0 / len(g.start_states))
    z = sum(out.values())
    return {k: v / z for k, v in out.items()}
