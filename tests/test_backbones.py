"""Any transformers model as the backbone: tiny mamba, mamba2, llama and qwen3_next from scratch on CPU through
train -> evaluate -> save -> load -> publish-model --dry-run; a local config.json gives the model type's model; a Hub
id (offline, from a temporary Hub cache) gives its config's fields, never its weights or code; bad backbones are one
line, exit 2, before any work."""
import json

import pytest
import torch
from transformers import AutoConfig, AutoModelForTokenClassification

from selectivbench.backbone import BackboneConfig, BackboneForTokenClassification, backbone_config
from selectivbench.cli import main

DATA = ["--vocab-size", "6", "--ambiguities", "2", "--ambiguity-depth", "2", "--seq-len", "12", "--num-train", "32",
        "--num-validation", "8", "--num-test", "8"]
SIZES = ["--d-model", "16", "--n-layers", "1", "--n-heads", "2", "--d-state", "4"]
TINY = [*SIZES, "--batch-size", "8", "--max-steps", "2", "--warmup-steps", "1", "--eval-every", "2",
        "--save-every", "2", "--cpu", "--quiet"]
BACKBONES = {
    "mamba": ({}, {"hidden_size": 16, "num_hidden_layers": 1, "state_size": 4, "intermediate_size": 32}),
    "mamba2": ({"n_groups": 1, "chunk_size": 8},
               {"hidden_size": 16, "num_hidden_layers": 1, "num_heads": 2, "head_dim": 16, "state_size": 4}),
    "llama": ({"intermediate_size": 32},
              {"hidden_size": 16, "num_hidden_layers": 1, "num_attention_heads": 2, "head_dim": 8,
               "intermediate_size": 32}),
    # a gated-delta-rule layer then an attention layer (its CPU path: transformers' torch reference), tiny MoE
    "qwen3_next": ({"intermediate_size": 32, "num_key_value_heads": 1, "linear_num_value_heads": 2,
                    "linear_num_key_heads": 2, "linear_key_head_dim": 8, "linear_value_head_dim": 8, "num_experts": 2,
                    "num_experts_per_tok": 1, "moe_intermediate_size": 16, "shared_expert_intermediate_size": 16,
                    "layer_types": ["linear_attention", "full_attention"]},
                   {"hidden_size": 16, "num_hidden_layers": 2, "num_attention_heads": 2}),
}


@pytest.mark.parametrize("backbone", sorted(BACKBONES))
def test_a_backbone_trains_evaluates_saves_loads_and_publishes(backbone, tmp_path, capsys):
    kwargs, expected = BACKBONES[backbone]
    run = tmp_path / "run"
    layers = ["--n-layers", str(expected["num_hidden_layers"])]
    assert main(["train", "--backbone", backbone, "--backbone-kwargs", json.dumps(kwargs), "--output-dir", str(run),
                 *TINY, *layers, *DATA]) == 0
    ckpt = run / "model"
    config = AutoConfig.from_pretrained(ckpt)
    assert type(config) is BackboneConfig and config.backbone_source == backbone
    inner = config.backbone_config()
    assert inner.model_type == backbone and {k: getattr(inner, k) for k in expected} == expected
    assert main(["evaluate", str(ckpt), "--out", str(tmp_path / "eval"), "--cpu"]) == 0
    rows = [json.loads(line) for line in (tmp_path / "eval.jsonl").read_text().splitlines()]
    assert {(r["mixer"], r["split"]) for r in rows} == {(f"backbone:{backbone}", "validation"),
                                                         (f"backbone:{backbone}", "test")}
    model = AutoModelForTokenClassification.from_pretrained(ckpt).eval()  # trust_remote_code stays off
    assert type(model) is BackboneForTokenClassification
    assert rows[0]["parameters"] == sum(p.numel() for p in model.parameters())
    model.save_pretrained(tmp_path / "again")
    again = BackboneForTokenClassification.from_pretrained(tmp_path / "again").eval()
    ids = torch.randint(0, 7, (2, 13), generator=torch.Generator().manual_seed(0))  # 6 is the gap id
    noise = torch.rand(2, 13, 6, generator=torch.Generator().manual_seed(1)) * 0.1
    with torch.no_grad():
        logits = model(ids, input_noise=noise).logits
        assert torch.equal(logits, again(ids, input_noise=noise).logits) and logits.shape == (2, 13, config.num_labels)
    assert main(["publish-model", str(ckpt), "--repo-id", f"org/sb-{backbone}", "--dry-run",
                 "--results", str(tmp_path / "eval.jsonl")]) == 0
    card = (ckpt / "README.md").read_text()
    assert f"A `backbone:{backbone}` sequence model" in card and "trust_remote_code" not in card
    assert f"The backbone is transformers' own `{backbone}`" in card


def test_the_backbone_reads_its_input_encoding_as_inputs_embeds(tmp_path):
    """The logits are the head over the backbone's last hidden state of inputs_embeds = the one-hot input layer."""
    inner = backbone_config("llama", '{"intermediate_size": 32}', 16, 1, 2, 4)
    torch.manual_seed(0)
    model = BackboneForTokenClassification(BackboneConfig(backbone=inner.to_dict(), vocab_size=6, num_labels=5)).eval()
    ids = torch.randint(0, 7, (2, 9), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        embeds = model.embed(ids)
        by_hand = model.classifier(model.backbone(inputs_embeds=embeds).last_hidden_state)
        assert torch.equal(model(ids).logits, by_hand)
        assert torch.equal(embeds[ids == 6], model.embed.bias.expand(int((ids == 6).sum()), -1))  # gap: zero one-hot


def test_a_config_json_gives_the_model_type_model(tmp_path):
    """A local config.json (as a Hub id's would be read: config only) maps the same sizes onto the same fields."""
    path = tmp_path / "config.json"
    AutoConfig.for_model("llama", hidden_size=64, num_hidden_layers=5, num_attention_heads=8, rope_theta=500.0,
                         intermediate_size=99).to_json_file(path)
    from_file = backbone_config(str(path), None, 16, 1, 2, 4)
    rope = {"rope_theta": 500.0, "rope_type": "default"}
    from_type = backbone_config("llama", json.dumps({"rope_parameters": rope, "intermediate_size": 99}), 16, 1, 2, 4)
    keep = ("hidden_size", "num_hidden_layers", "num_attention_heads", "head_dim", "intermediate_size")
    assert {k: getattr(from_file, k) for k in keep} == {k: getattr(from_type, k) for k in keep} == \
        {"hidden_size": 16, "num_hidden_layers": 1, "num_attention_heads": 2, "head_dim": 8, "intermediate_size": 99}
    assert from_file.rope_parameters == from_type.rope_parameters == rope


@pytest.mark.parametrize("flags, message", [
    (["--backbone", "nosuchtype"], "backbone='nosuchtype' is invalid: allowed a model type transformers knows"),
    (["--backbone", "org/not-cached-anywhere"], "backbone='org/not-cached-anywhere' is invalid: allowed a model type"),
    (["--backbone", "vit"], r"backbone='vit' is invalid: allowed a model whose forward takes inputs_embeds "
                            r"\(ViTModel has none\)"),
    (["--backbone", "llama", "--backbone-kwargs", "[1]"], r"backbone_kwargs='\[1\]' is invalid: allowed a JSON object"),
    (["--backbone", "llama", "--backbone-kwargs", '{"no_such_field": 1}'],
     "allowed fields of the llama config \\(no_such_field is not one\\)"),
    (["--backbone-kwargs", "{}"], "backbone_kwargs='{}' is invalid: allowed only with --backbone"),
    (["--backbone", "{root}/missing.json"], "missing.json' is invalid: allowed a readable config.json"),
    (["--backbone", "mamba", "--mixer", "deltanet"], "mixer='deltanet' is invalid: allowed its default 'gla' with "
                                                     "--backbone"),
    (["--backbone", "llama", "--dropout", "0.1"], "dropout=0.1 is invalid: allowed its default 0.0 with --backbone"),
])
def test_a_bad_backbone_is_one_line_exit_2_before_any_work(tmp_path, capsys, flags, message):
    import re

    out = tmp_path / "run"
    flags = [f.replace("{root}", str(tmp_path)) for f in flags]
    assert main(["train", *flags, "--output-dir", str(out), *TINY, *DATA]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("selectivbench: error: ") and re.search(message, err), err
    assert not out.exists()


def test_a_backbone_checkpoint_missing_a_weight_is_refused_by_evaluate(tmp_path, capsys):
    """from_pretrained would start a missing weight from random values and only warn."""
    from safetensors.torch import load_file, save_file

    run = tmp_path / "run"
    assert main(["train", "--backbone", "llama", "--backbone-kwargs", '{"intermediate_size": 32}',
                 "--output-dir", str(run), *TINY, *DATA]) == 0
    weights = run / "model" / "model.safetensors"
    tensors = load_file(weights)
    del tensors["backbone.layers.0.input_layernorm.weight"]
    save_file(tensors, weights, metadata={"format": "pt"})
    capsys.readouterr()
    assert main(["evaluate", str(run / "model"), "--out", str(tmp_path / "eval"), "--cpu"]) == 2
    last = capsys.readouterr().err.splitlines()[-1]  # after transformers' loading progress bar
    assert last == f"selectivbench: error: checkpoint={str(run / 'model')!r} is invalid: allowed the complete " \
                   "weights of its backbone:llama model (missing_keys: backbone.layers.0.input_layernorm.weight)"
    assert not (tmp_path / "eval.jsonl").exists()


def _cached_hub_repo(cache, repo_id, files):
    """A Hub repo as huggingface_hub's cache holds it: models--org--name/refs/main names the snapshot's commit."""
    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = cache / f"models--{repo_id.replace('/', '--')}"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    snapshot = repo / "snapshots" / commit
    snapshot.mkdir(parents=True)
    for name, content in files.items():
        (snapshot / name).write_bytes(content)
    return snapshot


def test_a_hub_id_reads_only_its_cached_config_never_its_weights_or_code(tmp_path, monkeypatch, capsys):
    """`--backbone org/tiny-llama` offline from the Hub cache: the config's own fields reach the model; the garbage
    weights (unloadable if ever read) and the auto_map's code (writes a marker if ever imported) stay untouched."""
    from huggingface_hub import constants

    cache, marker = tmp_path / "hub", tmp_path / "remote-code-ran"
    # huggingface_hub reads HF_HUB_CACHE / HF_HUB_OFFLINE once, at import: its constants are what it uses
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    evil = f"from pathlib import Path\nPath({str(marker)!r}).write_text('imported')\n".encode()
    hub_config = AutoConfig.for_model("llama", hidden_size=64, num_hidden_layers=5, num_attention_heads=8,
                                      num_key_value_heads=1, intermediate_size=24, rms_norm_eps=1e-3).to_dict()
    hub_config["auto_map"] = {"AutoConfig": "configuration_evil.EvilConfig", "AutoModel": "modeling_evil.EvilModel"}
    snapshot = _cached_hub_repo(cache, "org/tiny-llama", {
        "config.json": json.dumps(hub_config).encode(), "configuration_evil.py": evil, "modeling_evil.py": evil,
        "model.safetensors": b"\xff" * 64, "pytorch_model.bin": b"\xff" * 64})
    run = tmp_path / "run"
    assert main(["train", "--backbone", "org/tiny-llama", "--output-dir", str(run), *TINY, *DATA]) == 0
    config = AutoConfig.from_pretrained(run / "model")
    assert type(config) is BackboneConfig and config.backbone_source == "org/tiny-llama"
    assert "auto_map" not in (run / "model" / "config.json").read_text()  # no pointer to code the checkpoint lacks
    inner = config.backbone_config()
    keep = ("hidden_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads", "head_dim",
            "intermediate_size", "rms_norm_eps")
    assert inner.model_type == "llama" and {k: getattr(inner, k) for k in keep} == {
        "hidden_size": 16, "num_hidden_layers": 1, "num_attention_heads": 2, "num_key_value_heads": 1, "head_dim": 8,
        "intermediate_size": 24, "rms_norm_eps": 1e-3}
    # the same config.json read as a local file gives the same backbone config (two routes, one reader each)
    from_file = backbone_config(str(snapshot / "config.json"), None, 16, 1, 2, 4)
    assert {k: getattr(from_file, k) for k in keep} == {k: getattr(inner, k) for k in keep}
    assert main(["evaluate", str(run / "model"), "--out", str(tmp_path / "eval"), "--cpu"]) == 0
    rows = [json.loads(line) for line in (tmp_path / "eval.jsonl").read_text().splitlines()]
    assert {(r["mixer"], r["split"]) for r in rows} == {("backbone:llama", "validation"), ("backbone:llama", "test")}
    assert not marker.exists()


@pytest.mark.parametrize("config, reason", [
    ({"model_type": "evil", "auto_map": {"AutoConfig": "configuration_evil.EvilConfig"}},
     "ValueError: The repository org/evil contains custom code"),
    ({"model_type": "no_such_type"}, "ValueError: .*no_such_type"),
])
def test_a_cached_hub_config_that_needs_its_own_code_is_one_line_exit_2(tmp_path, monkeypatch, capsys, config, reason):
    """A Hub config transformers cannot build without the repo's code is refused, that code never imported."""
    import re

    from huggingface_hub import constants

    cache, marker = tmp_path / "hub", tmp_path / "remote-code-ran"
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    evil = f"from pathlib import Path\nPath({str(marker)!r}).write_text('imported')\n".encode()
    _cached_hub_repo(cache, "org/evil", {"config.json": json.dumps(config).encode(), "configuration_evil.py": evil})
    out = tmp_path / "run"
    assert main(["train", "--backbone", "org/evil", "--output-dir", str(out), *TINY, *DATA]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("selectivbench: error: backbone='org/evil' is invalid: allowed a "
                                                   "model type transformers knows") and re.search(reason, err), err
    assert not out.exists() and not marker.exists()
