"""Mixer plugins end to end: a mixer in a file outside models/ (the example RG-LRU), an installed
entry point and register_mixer, through check-mixer, train, evaluate, reproduce, save and load (also
where the plugin file is gone and where selectivbench is blocked); broken and bad plugins."""
import hashlib
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
    # (a) selectivbench in a fresh process (plugin gone; it would be refused anyway, the record's origin is
    # never imported): its own loader says what to do; with
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
    assert f"REFUSED mixer plugin 'rglru' (from file:{plugin_file}:RGLRUMixer, sha256 " in done.stdout
    assert "is not known in this process: code a checkpoint names is never imported on its say-so. Pass --mixer " \
           "PATH.py:CLASS" in done.stdout
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


# --- a checkpoint is data: the code its config names is never imported on its say-so ---------------

@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A checkpoint of the example plugin, trained once; its plugin file stays where the record says."""
    root = tmp_path_factory.mktemp("trained")
    plugin = root / "plugin" / "my_rglru.py"
    plugin.parent.mkdir()
    shutil.copy(EXAMPLE, plugin)
    assert main(["train", "--mixer", f"{plugin}:RGLRUMixer", "--output-dir", str(root / "run"), *TINY, *DATA]) == 0
    return root / "run" / "model", plugin


@pytest.fixture
def fresh_process(monkeypatch):
    """No plugin registered or resolved yet, as in a new process (training the fixture's checkpoint
    registered one here), and every prompt recorded instead of answered."""
    from selectivbench.models import plugins

    monkeypatch.setattr(plugins, "_REGISTRY", {})
    prompts = []
    monkeypatch.setattr("builtins.input", lambda *a: prompts.append(a) or "y")
    return prompts


def checkpoint_copy(trained, tmp_path) -> Path:
    ckpt = tmp_path / "ckpt"
    shutil.copytree(trained[0], ckpt)
    return ckpt


def marker_plugin(path: Path, marker: Path) -> str:
    """The example plugin with a first line that writes `marker` when the file is imported: the
    same class, so that importing it would even load the model. Returns the sha256 of its text (as a
    plugin record holds it)."""
    text = f"import pathlib\npathlib.Path({str(marker)!r}).write_text('imported')\n" + EXAMPLE.read_text()
    path.write_text(text)
    return hashlib.sha256(text.encode()).hexdigest()


def set_plugin_record(ckpt: Path, **fields) -> None:
    config = json.loads((ckpt / "config.json").read_text())
    config.update(fields.pop("config", {}))
    if config.get("mixer_plugin") is not None:
        config["mixer_plugin"].update(fields)
    (ckpt / "config.json").write_text(json.dumps(config))


@pytest.mark.parametrize("named", ["absolute path", "relative path: the checkpoint's own copy",
                                   "relative path: a file beside the weights", "module in the current folder",
                                   "entry point declared in the current folder", "spec as the config's mixer"])
def test_a_checkpoint_never_runs_the_code_its_config_names(trained, tmp_path, monkeypatch, capsys, fresh_process,
                                                          named):
    ckpt, marker = checkpoint_copy(trained, tmp_path), tmp_path / "MARKER"
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    if named == "absolute path":
        sha = marker_plugin(tmp_path / "elsewhere.py", marker)
        set_plugin_record(ckpt, origin=f"file:{tmp_path / 'elsewhere.py'}:RGLRUMixer", sha256=sha)
    elif named.startswith("relative path"):
        cwd = ckpt  # a user evaluating from inside the folder they were handed
        name = "mixer_plugin.py" if "own copy" in named else "helper.py"
        sha = marker_plugin(ckpt / name, marker)
        set_plugin_record(ckpt, origin=f"file:{name}:RGLRUMixer", sha256=sha)
    elif named == "module in the current folder":
        sha = marker_plugin(cwd / "rglru_impl.py", marker)
        set_plugin_record(ckpt, origin="module:rglru_impl:RGLRUMixer", sha256=sha)
        monkeypatch.syspath_prepend(str(cwd))  # as `python -m selectivbench` puts the current folder first
    elif named == "entry point declared in the current folder":
        cwd = ckpt  # metadata shipped in the folder: found on sys.path, yet not installed by the user
        sha = marker_plugin(ckpt / "rglru_impl.py", marker)
        (ckpt / "rglru_impl-0.1.dist-info").mkdir()
        (ckpt / "rglru_impl-0.1.dist-info" / "METADATA").write_text("Metadata-Version: 2.1\nName: rglru-impl\n"
                                                                      "Version: 0.1\n")
        (ckpt / "rglru_impl-0.1.dist-info" / "entry_points.txt").write_text(
            "[selectivbench.mixers]\nrglru = rglru_impl:RGLRUMixer\n")
        set_plugin_record(ckpt, origin="entry-point:rglru", sha256=sha)
        monkeypatch.syspath_prepend(str(cwd))
    else:  # no record: the config's mixer is itself a spec, which building the config would resolve
        marker_plugin(tmp_path / "elsewhere.py", marker)
        set_plugin_record(ckpt, config={"mixer": f"{tmp_path / 'elsewhere.py'}:RGLRUMixer", "mixer_plugin": None})
    monkeypatch.chdir(cwd)
    for argv in (["evaluate", str(ckpt), "--out", str(tmp_path / "eval"), "--cpu"],
                 ["publish-model", str(ckpt), "--repo-id", "org/x", "--dry-run"]):
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and err.startswith("selectivbench: error: "), err
        if named == "spec as the config's mixer":
            assert "allowed in a saved config one of" in err and "(code a config names is never imported)" in err
        else:
            assert f"checkpoint={str(ckpt)!r} is invalid: mixer plugin 'rglru'" in err
            assert "is not known in this process: code a checkpoint names is never imported on its say-so. " \
                   "Pass --mixer PATH.py:CLASS or MODULE:CLASS naming its source" in err
            assert "trust_remote_code=True" in err
    with pytest.raises((PluginError, ValueError)):
        SelectivBenchForTokenClassification.from_pretrained(ckpt)
    assert not marker.exists() and fresh_process == []  # nothing ran, nothing prompted
    assert not (tmp_path / "eval.jsonl").exists() and not (ckpt / "README.md").exists()


def test_mixer_naming_the_recorded_source_loads_the_checkpoint(trained, tmp_path, capsys, fresh_process):
    """The plugin file has moved (the record's path is gone): --mixer names it, evaluate and
    publish-model run, and the rows equal those of the run's own evaluation (the same model)."""
    ckpt = checkpoint_copy(trained, tmp_path)
    moved = tmp_path / "moved" / "rglru_v1.py"
    moved.parent.mkdir()
    shutil.copy(trained[1], moved)
    set_plugin_record(ckpt, origin=f"file:{tmp_path / 'gone.py'}:RGLRUMixer")
    argv = ["evaluate", str(ckpt), "--out", str(tmp_path / "eval"), "--cpu"]
    assert main(argv) == 2
    assert f"mixer plugin 'rglru' (from file:{tmp_path / 'gone.py'}:RGLRUMixer" in capsys.readouterr().err
    assert main([*argv, "--mixer", f"{moved}:RGLRUMixer"]) == 0
    rows = [json.loads(line) for line in (tmp_path / "eval.jsonl").read_text().splitlines()]
    assert {r["mixer"] for r in rows} == {"rglru"} and {r["split"] for r in rows} == {"validation", "test"}
    assert main(["evaluate", str(trained[0]), "--out", str(tmp_path / "eval_own"), "--cpu"]) == 0
    own = [json.loads(line) for line in (tmp_path / "eval_own.jsonl").read_text().splitlines()]
    assert [r["element_accuracy"] for r in rows] == [r["element_accuracy"] for r in own]
    assert main(["publish-model", str(ckpt), "--repo-id", "org/sb-rglru", "--dry-run", "--mixer",
                 f"{moved}:RGLRUMixer", "--results", str(tmp_path / "eval.jsonl")]) == 0
    assert "| `rglru` | data-dependent diagonal" in (ckpt / "README.md").read_text()
    assert fresh_process == []


@pytest.mark.parametrize("command", ["evaluate", "publish-model"])
def test_mixer_whose_source_differs_from_the_record_is_one_error_and_never_imported(trained, tmp_path, capsys,
                                                                                    fresh_process, command):
    ckpt, marker = checkpoint_copy(trained, tmp_path), tmp_path / "MARKER"
    marker_plugin(tmp_path / "edited.py", marker)  # the plugin, edited since the checkpoint was made
    spec = f"{tmp_path / 'edited.py'}:RGLRUMixer"
    argv = ["evaluate", str(ckpt), "--out", str(tmp_path / "eval"), "--cpu"] if command == "evaluate" \
        else ["publish-model", str(ckpt), "--repo-id", "org/x", "--dry-run"]
    assert main([*argv, "--mixer", spec]) == 2
    err = capsys.readouterr().err
    recorded = json.loads((ckpt / "config.json").read_text())["mixer_plugin"]["sha256"]
    assert err.count("\n") == 1 and err.startswith(f"selectivbench: error: mixer={spec!r} is invalid: its source "
                                                   "(sha256 ")
    assert f"is not the one the checkpoint recorded ('rglru' sha256 {recorded[:12]}...); not imported" in err
    assert not marker.exists() and not (tmp_path / "eval.jsonl").exists() and not (ckpt / "README.md").exists()
