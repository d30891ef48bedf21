"""Mixer plugins end to end: a mixer in a file outside models/ (the example RG-LRU), an installed
entry point and register_mixer, through check-mixer, train, evaluate, reproduce, save and load (also
where the plugin file is gone and where selectivbench is blocked); broken and bad plugins."""
import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from selectivbench.check_mixer import check_mixer
from selectivbench.cli import main
from selectivbench.models import (PluginError, SelectivBenchConfig, SelectivBenchForTokenClassification,
                                  register_mixer, resolve_mixer, taxonomy_markdown)

from helpers import assert_loads_without_selectivbench

EXAMPLE = Path(__file__).parents[1] / "examples" / "rglru_mixer.py"
V = 6
DATA = ["--vocab-size", "6", "--ambiguities", "2", "--ambiguity-depth", "2", "--seq-len", "12", "--num-train", "32",
        "--num-validation", "8", "--num-test", "8"]
TINY = ["--d-model", "8", "--n-layers", "1", "--batch-size", "8", "--max-steps", "2", "--warmup-steps", "1",
        "--eval-every", "2", "--save-every", "2", "--cpu", "--quiet"]


@pytest.fixture
def example(tmp_path):
    """The example mixer copied to a temporary folder (not under models/, not importable by name)."""
    path = tmp_path / "plugin" / "my_rglru.py"
    path.parent.mkdir()
    shutil.copy(EXAMPLE, path)
    return f"{path}:RGLRUMixer"


def write_plugin(folder: Path, name: str, body: str) -> str:
    """A plugin file built from the example's imports plus `body`; returns its spec for the class `Plugin`."""
    path = folder / f"{name}.py"
    header = "import torch\nimport torch.nn as nn\nfrom selectivbench.models import DiagonalState, Mixer\n"
    path.write_text(header + textwrap.dedent(body))
    return f"{path}:Plugin"


# a linear recurrence h_t = 0.5 h_{t-1} + W x_t: right, except where a broken variant says otherwise
RECURRENCE = """
class Plugin(Mixer):
    mixer_name = "{name}"

    def __init__(self, config):
        super().__init__()
        self.proj = nn.Linear(config.d_model, config.d_model)

    def forward(self, x, state=None):
        b = self.proj(x)
        h = {initial}
        out = []
        for b_t in b.unbind(1):
            h = 0.5 * h + b_t
            out.append(h)
        y = torch.stack(out, 1)
        return {output}, DiagonalState(h)

    def step(self, x_t, state):
        h = 0.5 * (0 if state is None else state.memory) + self.proj(x_t)
        return h, DiagonalState(h)
"""


def recurrence(name, initial="torch.zeros_like(b[:, 0]) if state is None else state.memory", output="y"):
    return RECURRENCE.format(name=name, initial=initial, output=output)


def test_the_example_mixer_passes_every_check_with_its_figures(example, capsys):
    assert main(["check-mixer", example]) == 0
    out = capsys.readouterr().out
    assert "(mixer 'rglru')" in out and "all 6 applicable checks hold" in out
    for line in ("| causal | pass | max |change| at t <= 23 when inputs after it change: 0 |",
                 "| state size | pass | state bytes after 16 steps: 1024, after 64: 1024 |",
                 "| save/load | pass | max |saved - loaded|: 0 |"):
        assert line in out
    results = {r.name: r for r in check_mixer(example)}
    assert list(results) == ["causal", "step = forward", "pieces = one pass", "state size", "bf16 autocast",
                             "save/load"]
    assert all(r.passed for r in results.values())


@pytest.mark.parametrize("broken, failing", [
    # the output at t reads the mean over the whole sequence: later inputs reach earlier outputs
    (recurrence("peeks", output="y + y.mean(1, keepdim=True)"), "causal"),
    # forward starts from zero whatever state it is handed: a stream in pieces forgets its past
    (recurrence("forgets", initial="torch.zeros_like(b[:, 0])"), "pieces = one pass"),
])
def test_a_broken_mixer_fails_check_mixer_naming_the_check(tmp_path, capsys, broken, failing):
    spec = write_plugin(tmp_path, "broken", broken)
    assert main(["check-mixer", spec]) == 1
    out = capsys.readouterr().out
    assert f"| {failing} | FAIL |" in out and out.splitlines()[-1].startswith(f"FAILED: {failing} (")
    results = {r.name: r.passed for r in check_mixer(spec)}
    assert results[failing] is False
    if failing != "causal":  # the stateless restart breaks nothing else
        assert [name for name, passed in results.items() if not passed] == [failing]


def test_the_right_recurrence_passes(tmp_path):
    """The broken ones' sound twin (a control: the failures above are the breakage's, not the harness's)."""
    assert all(r.passed for r in check_mixer(write_plugin(tmp_path, "sound", recurrence("sound"))))


BAD = {
    "unimportable": ("import no_such_package_xyz\n", "ModuleNotFoundError: No module named 'no_such_package_xyz'"),
    "not_a_mixer": ("class Plugin(nn.Module):\n    pass\n", "is not a Mixer subclass"),
    "clash": (recurrence("gla"), "name='gla' clashes with a built-in mixer"),
    "constructor_raises": ("class Plugin(Mixer):\n    def __init__(self, config):\n        raise RuntimeError('boom')\n"
                           "    def forward(self, x, state=None):\n        return x, None\n",
                           "its constructor raised RuntimeError: boom"),
    "forward_raises": ("class Plugin(Mixer):\n    def __init__(self, config):\n        super().__init__()\n"
                       "    def forward(self, x, state=None):\n        raise KeyError('nope')\n",
                       "its forward raised KeyError: 'nope'"),
}


@pytest.mark.parametrize("case", sorted(BAD))
@pytest.mark.parametrize("command", ["train", "check-mixer"])
def test_a_bad_plugin_is_one_line_exit_2_before_any_work(tmp_path, capsys, case, command):
    body, reason = BAD[case]
    spec = write_plugin(tmp_path, case, body)
    out = tmp_path / "run"
    argv = ["train", "--mixer", spec, "--output-dir", str(out), *TINY, *DATA] if command == "train" \
        else ["check-mixer", spec]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"selectivbench: error: mixer={spec!r} is invalid")
    assert reason in err
    assert not out.exists()  # nothing built, nothing written


def test_specs_that_do_not_resolve_name_the_reason(tmp_path):
    for spec, reason in [(f"{tmp_path}/missing.py:X", f"no file {tmp_path}/missing.py"),
                         ("os.path:join", "is not a Mixer subclass"), ("nosuchplugin", "no mixer of that name"),
                         ("json:NoSuchClass", "json defines no NoSuchClass")]:
        with pytest.raises(ValueError, match=rf"mixer='{spec}' is invalid: allowed one of .*\(.*{reason}"):
            SelectivBenchConfig(mixer=spec)


def test_register_mixer_makes_a_name_and_refuses_clashes_and_non_mixers(tmp_path):
    spec = write_plugin(tmp_path, "registered", recurrence("ignored"))
    cls = resolve_mixer(spec).cls
    register_mixer("halfdecay", cls)
    config = SelectivBenchConfig(mixer="halfdecay", d_model=16)
    assert config.mixer_plugin["origin"] == "registered:halfdecay" and config.mixer_plugin["class"] == "Plugin"
    assert type(SelectivBenchForTokenClassification(config).model.layers[0].mixer) is cls
    with pytest.raises(PluginError, match="name='mamba' clashes with a built-in mixer"):
        register_mixer("mamba", cls)
    with pytest.raises(PluginError, match="is not a Mixer subclass"):
        register_mixer("linear", torch.nn.Linear)
    with pytest.raises(PluginError, match="name='a-b' is invalid: allowed a Python identifier"):
        register_mixer("a-b", cls)


def test_a_plugin_that_imports_something_else_is_refused_at_save_time(tmp_path):
    spec = write_plugin(tmp_path, "heavy", "import json\nfrom selectivbench.builders import TASKS\n"
                        + recurrence("heavy"))
    model = SelectivBenchForTokenClassification(SelectivBenchConfig(mixer=spec, vocab_size=V, num_labels=3, d_model=8))
    with pytest.raises(PluginError, match=r"cannot travel with its checkpoint: line 5 imports 'selectivbench.builders' "
                                          r"\('from selectivbench.builders import TASKS'\)"):
        model.save_pretrained(tmp_path / "ckpt")
    assert not (tmp_path / "ckpt").exists()  # refused before anything was written


def test_a_parallel_only_mixer_trains_and_refuses_recurrent(tmp_path, capsys):
    body = recurrence("parallel").split("    def step")[0]
    spec = write_plugin(tmp_path, "parallel", body)
    model = SelectivBenchForTokenClassification(SelectivBenchConfig(mixer=spec, vocab_size=V, num_labels=3, d_model=8))
    ids = torch.randint(0, V, (2, 5))
    first = model(ids[:, :1], use_cache=True)  # a one-token piece takes the parallel form
    assert torch.allclose(torch.cat([first.logits, model(ids[:, 1:], state=first.state).logits], 1),
                          model(ids).logits, atol=1e-6)
    with pytest.raises(ValueError, match="recurrent=True is invalid for mixer 'parallel': it has no step"):
        model(ids, recurrent=True)
    assert main(["check-mixer", spec]) == 0
    assert "| step = forward | n/a | no step (a parallel form only) |" in capsys.readouterr().out


def test_train_evaluate_publish_and_load_where_the_plugin_is_gone(example, tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", "--mixer", example, "--output-dir", str(run), *TINY, *DATA]) == 0
    ckpt = run / "model"
    config = json.loads((ckpt / "config.json").read_text())
    plugin_file = Path(example.rpartition(":")[0])
    assert config["mixer"] == "rglru" and config["mixer_plugin"]["origin"] == f"file:{plugin_file}:RGLRUMixer"
    assert json.loads((ckpt / "selectivbench_run.json").read_text())["train_args"]["mixer"] == example
    saved = (ckpt / "mixer_plugin.py").read_text()
    assert "from .mixer_state import DiagonalState, Mixer" in saved and "selectivbench" not in saved.split('"""')[2]
    assert main(["evaluate", str(ckpt), "--out", str(tmp_path / "eval"), "--cpu"]) == 0
    rows = [json.loads(line) for line in (tmp_path / "eval.jsonl").read_text().splitlines()]
    assert {r["mixer"] for r in rows} == {"rglru"} and {r["split"] for r in rows} == {"validation", "test"}
    assert main(["publish-model", str(ckpt), "--repo-id", "org/sb-rglru", "--dry-run",
                 "--results", str(tmp_path / "eval.jsonl")]) == 0
    out = capsys.readouterr().out
    assert "mixer_plugin.py" in out
    assert "| `rglru` | data-dependent diagonal (a^(8 r_t))" in (ckpt / "README.md").read_text()

    model = SelectivBenchForTokenClassification.from_pretrained(ckpt)
    shutil.rmtree(plugin_file.parent)  # the plugin is gone from disk
    # (b) neither selectivbench nor the plugin: the checkpoint's own code, same logits
    assert_loads_without_selectivbench(ckpt, model, tmp_path, V)
    # (a) selectivbench in a fresh process, plugin gone: its own loader says what to do; with
    # trust_remote_code=True the checkpoint's copy gives the same logits
    ids = torch.randint(0, V + 1, (2, 11), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.save({"ids": ids, "logits": model.eval()(ids).logits}, tmp_path / "io.pt")
    script = textwrap.dedent(f"""
        import torch
        from transformers import AutoModelForTokenClassification
        from selectivbench.models import PluginError, SelectivBenchForTokenClassification
        try:
            SelectivBenchForTokenClassification.from_pretrained({str(ckpt)!r})
        except PluginError as err:
            print("REFUSED", err)
        m = AutoModelForTokenClassification.from_pretrained({str(ckpt)!r}, trust_remote_code=True).eval()
        io = torch.load({str(tmp_path / "io.pt")!r})
        with torch.no_grad():
            print("SAME", torch.equal(m(io["ids"]).logits, io["logits"]), type(m.model.layers[0].mixer).__module__)
    """)
    env = {**os.environ, "HF_MODULES_CACHE": str(tmp_path / "modules_a")}
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    assert f"REFUSED mixer plugin 'rglru' (from file:{plugin_file}:RGLRUMixer) is not available in this process: " \
           f"no file {plugin_file}" in done.stdout
    assert "trust_remote_code=True" in done.stdout
    assert "SAME True transformers_modules." in done.stdout and ".mixer_plugin" in done.stdout


def test_reproduce_smoke_runs_a_plugin(example, tmp_path):
    from selectivbench.sweeps.driver import reproduce

    outcome = reproduce("gapped", "smoke", out=str(tmp_path / "results"), mixers=[example])
    assert outcome.failed == [] and len(outcome.ran) == outcome.planned == 4  # 2 seeds x 2 learning rates
    assert sorted(outcome.ran) == sorted(f"rglru-d8-lr{lr}-wu2-seed{s}" for s in (1, 2) for lr in ("0.003", "0.01"))
    rows = [json.loads(line) for line in (outcome.folder / "results.jsonl").read_text().splitlines()]
    assert {r["mixer"] for r in rows} == {"rglru"}
    assert "rglru" in (outcome.folder / "summary.md").read_text()


def test_an_installed_entry_point_plugin_is_a_mixer_name_and_a_taxonomy_row(tmp_path, monkeypatch, capsys):
    site = tmp_path / "site"
    (site / "lru_pkg").mkdir(parents=True)
    shutil.copy(EXAMPLE, site / "lru_pkg" / "griffin.py")
    (site / "lru_pkg" / "__init__.py").write_text("")
    info = site / "lru_pkg-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: lru-pkg\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[selectivbench.mixers]\ngriffin = lru_pkg.griffin:RGLRUMixer\n")
    assert "`griffin`" not in taxonomy_markdown()
    monkeypatch.syspath_prepend(str(site))
    assert main(["taxonomy"]) == 0
    assert "| `griffin` | data-dependent diagonal (a^(8 r_t)) | yes (i_t, and sqrt(1 - a_t^2)) |" in \
        capsys.readouterr().out
    config = SelectivBenchConfig(mixer="griffin", d_model=16)
    assert config.mixer_plugin["origin"] == "entry-point:griffin"
    assert main(["train", "--mixer", "griffin", "--output-dir", str(tmp_path / "run"), *TINY, *DATA]) == 0
    assert json.loads((tmp_path / "run" / "model" / "config.json").read_text())["mixer"] == "griffin"
