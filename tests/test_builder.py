"""The datasets builder, the Hub-layout folder, its card and the CLI."""
import re
import shutil

import pytest
from datasets import load_dataset
from huggingface_hub import DatasetCard

from selectivbench.builders import Grammar, ParameterError, SelectivBench, Sampler, make_grammar, task_params
from selectivbench.builders import shards as shards_module
from selectivbench.builders.ceiling import ceiling_counts
from selectivbench.builders.config import TASK_DESCRIPTIONS, task_description
from selectivbench.cli import main
from selectivbench.hub.dataset_folder import generate_folder, make_builder

SIZES = dict(num_train=30, num_validation=12, num_test=8)
CONFIGS = ["complexity", "gapped", "distractor", "generalization"]


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    out = tmp_path_factory.mktemp("hub") / "selectivbench"
    generate_folder(CONFIGS, out, **SIZES, seq_len=60)
    return out


def test_load_dataset_gives_every_config_with_its_splits_features_and_sizes(folder, monkeypatch):
    for name in CONFIGS:
        ds = load_dataset(str(folder), name)
        expected = {"train": 30, "validation": 12, "test": 8}
        if name == "generalization":
            expected.update({f"test_gap{g}": 8 for g in (10, 20, 50, 100)})
        assert {k: v.num_rows for k, v in ds.items()} == expected
        p = task_params(name, seq_len=60)
        g = Grammar.load(folder / name / "grammar.json")
        assert g.to_json_dict() == make_grammar(p).to_json_dict()
        feats = ds["train"].features
        assert feats["labels"].feature.names == g.states
        assert set(feats) >= {"input_ids", "labels", "element_index"}
        row = ds["validation"][3]
        ref = Sampler(p, g).sample("validation", 3)
        assert row["input_ids"] == ref["input_ids"].tolist() and row["labels"] == ref["labels"].tolist()
        assert row["element_index"] == ref["element_index"].tolist() and row["index"] == 3
    # by name, from the folder's parent
    monkeypatch.chdir(folder.parent)
    assert load_dataset("selectivbench", "gapped")["test"].num_rows == 8


def test_test_gap_splits_have_their_gaps(folder):
    ds = load_dataset(str(folder), "generalization")
    for g in (10, 20, 50, 100):
        row = ds[f"test_gap{g}"][0]
        assert len(row["input_ids"]) == 60 * (g + 1)
    assert len(ds["test"][0]["input_ids"]) == 60 * 11


def test_card_yaml_parses_and_its_numbers_match_the_data(folder):
    card = DatasetCard.load(folder / "README.md")
    data = card.data.to_dict()
    assert [c["config_name"] for c in data["configs"]] == sorted(CONFIGS)
    assert [c.get("default", False) for c in data["configs"]] == [True, False, False, False]  # complexity
    infos = {i["config_name"]: i for i in data["dataset_info"]}
    assert {s["name"]: s["num_examples"] for s in infos["distractor"]["splits"]} == \
        {"train": 30, "validation": 12, "test": 8}
    assert data["license"] == "apache-2.0" and "token-classification" in data["task_categories"]
    rows = re.findall(r"^\| `(\w+)` \| (\w+) \| ([\d.]+) \| ([\d.]+) \| (\d+) \|$", card.text, re.M)
    assert len(rows) == 3 * 3 + 7
    for name, split, el, st, n in rows:
        p = task_params(name, seq_len=60)
        ds = load_dataset(str(folder), name, split=split)
        assert int(n) == ds.num_rows
        c = ceiling_counts(Sampler(p, make_grammar(p)), split, ds)
        assert float(el) == round(c["element_correct"] / c["elements"], 4)
        assert float(st) == round(c["step_correct"] / c["steps"], 4)
    states = re.findall(r"^\| `(\w+)` \| (\d+) \| `(\w+)` \| (\d+) \| (\d+) \|", card.text, re.M)
    g = make_grammar(task_params("complexity", seq_len=60))
    assert ("complexity", "1", "symseq", str(g.num_states), str(g.num_edges)) in states
    assert "```\ninput: " in card.text and "label: " in card.text
    # the paper's task text speaks of its default gaps and noise: the card says which fields differ
    assert ("| `generalization` | Task 4: trained as task 2, tested with fixed gaps of 10, 20, 50 and 100 steps; "
            "changed here: seq_len. |") in card.text
    p = task_params("generalization", test_gaps=(3,), noise=0.0)
    assert SelectivBench(config_name="generalization", noise=0.0, test_gaps=(3,)).info.description == \
        task_description("generalization", p) == ("Task 4: trained as task 2, tested with fixed gaps of 10, 20, 50 "
                                                   "and 100 steps; changed here: noise, test_gaps.")
    assert task_description("gapped", task_params("gapped")) == TASK_DESCRIPTIONS["gapped"]


def test_overrides_change_the_data_and_the_cache_key(tmp_path):
    a = SelectivBench(config_name="complexity", cache_dir=str(tmp_path), num_train=5, num_validation=0,
                      num_test=0, seq_len=30)
    b = SelectivBench(config_name="complexity", cache_dir=str(tmp_path), num_train=5, num_validation=0,
                      num_test=0, seq_len=30, ambiguities=20, ambiguity_depth=20)
    assert a.config_id != b.config_id and a.cache_dir != b.cache_dir
    for x in (a, b):
        x.download_and_prepare()
    ra, rb = a.as_dataset("train"), b.as_dataset("train")
    assert ra.features["labels"].feature.num_classes == 1601
    assert rb.features["labels"].feature.num_classes == 20 * 20 + 20 + 1
    assert ra[0]["labels"] != rb[0]["labels"]
    # empty splits are left out (datasets cannot read one back); the cache is keyed by the builder's version
    assert set(a.as_dataset()) == {"train"}
    assert a.config.version == SelectivBench.VERSION == b.config.version
    assert a.cache_dir.endswith(f"/selectivbench/{a.config_id}/{SelectivBench.VERSION}")


def test_one_and_two_processes_write_identical_parquet_bytes(tmp_path, monkeypatch):
    monkeypatch.setattr(shards_module, "SHARD_SAMPLES", 7)
    outs = []
    for procs in (1, 2):
        out = tmp_path / f"p{procs}"
        generate_folder(["distractor"], out, num_proc=procs, num_train=40, num_validation=9, num_test=3, seq_len=80)
        outs.append(out)
    files = sorted(p.relative_to(outs[0]) for p in outs[0].rglob("*.parquet"))
    assert len(files) == 3
    for f in files:
        assert (outs[0] / f).read_bytes() == (outs[1] / f).read_bytes()


def test_streaming_yields_the_prepared_rows(tmp_path):
    b = SelectivBench(config_name="gapped", cache_dir=str(tmp_path), num_train=0, num_validation=25,
                      num_test=0, seq_len=40)
    b.download_and_prepare()
    prepared = list(b.as_dataset("validation"))
    streamed = list(b.as_streaming_dataset("validation"))
    assert streamed == prepared and len(prepared) == 25


def test_unknown_config_and_bad_parameters_fail_before_any_work(tmp_path, capsys):
    with pytest.raises(ParameterError, match="config='copying' is invalid"):
        make_builder("copying")
    with pytest.raises(ParameterError, match="num_train=-1 is invalid"):
        make_builder("gapped", num_train=-1)
    out = tmp_path / "never"
    assert main(["generate", "gapped", "--out", str(out), "--gap-prob", "1.5"]) == 2
    assert "gap_prob=1.5 is invalid: allowed [0.0, 1.0]" in capsys.readouterr().err
    assert not out.exists()


def test_publish_dry_run_lists_the_folder_and_touches_no_network(folder, tmp_path, capsys):
    copy = tmp_path / "copy"
    shutil.copytree(folder, copy)
    for ignored in (".git/config", ".cache/huggingface/upload/x.lock"):  # upload_folder leaves these out
        (copy / ignored).parent.mkdir(parents=True, exist_ok=True)
        (copy / ignored).write_text("not data")
    assert main(["publish-dataset", str(copy), "--repo-id", "org/selectivbench", "--dry-run"]) == 0
    out = capsys.readouterr().out
    listed = [line.strip() for line in out.splitlines()[1:]]
    expected = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*")  # the card's local record stays
                      if p.is_file() and p.name != "selectivbench_card.json")
    assert "Would upload" in out and listed == expected
    assert "complexity/grammar.json" in listed and "generalization/test_gap100-00000-of-00001.parquet" in listed
    assert main(["publish-dataset", str(folder), "--repo-id", "selectivbench", "--dry-run"]) == 2


def test_every_task_parameter_is_a_builder_config_field():
    import dataclasses

    from selectivbench.builders import TaskParams
    from selectivbench.builders.builder import PAPER_SIZES, SelectivBenchBuilderConfig

    own = {f.name for f in dataclasses.fields(SelectivBenchBuilderConfig)}
    assert {f.name for f in dataclasses.fields(TaskParams)} | set(PAPER_SIZES) | {"task"} <= own
