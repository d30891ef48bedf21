"""`selectivbench generate` into existing folders: atomic configs, a card that describes what the
folder holds, files of others left alone, checked loading; and one split built alone."""
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import psutil
import pyarrow.parquet as pq
import pytest
from datasets import load_dataset
from huggingface_hub import DatasetCard

from selectivbench.builders import ParameterError, SelectivBench, task_params
from selectivbench.builders.shards import element_index_dtype
from selectivbench.builders.split_cache import build_split
from selectivbench.hub.dataset_records import BUILD_PREFIX, check_config_folder, load_config_folder
from selectivbench.hub.dataset_folder import generate_folder
from selectivbench.hub.upload import publish_folder

SMALL = dict(num_train=20, num_validation=6, num_test=4, seq_len=40)


def snapshot(folder):
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def card_configs(folder):
    data = DatasetCard.load(folder / "README.md").data.to_dict()
    return {i["config_name"]: i for i in data["dataset_info"]}, data


def test_configs_from_earlier_calls_stay_each_with_its_own_parameters_and_command(tmp_path):
    out = tmp_path / "data"
    # our generator names states in one order for every seed, so the two configs share the names list
    generate_folder(["gapped"], out, command="first", **SMALL, grammar_rng="selectivbench")
    first_gapped = snapshot(out / "gapped")
    generate_folder(["complexity"], out, command="second", **{**SMALL, "seed": 7}, grammar_rng="selectivbench")
    assert snapshot(out / "gapped") == first_gapped
    infos, data = card_configs(out)
    assert sorted(infos) == ["complexity", "gapped"]
    assert [c["config_name"] for c in data["configs"] if c.get("default")] == ["complexity"]
    card = (out / "README.md").read_text()
    assert "- `gapped`: `first`" in card and "- `complexity`: `second`" in card
    assert "| `complexity` | 7 |" in card and "| `gapped` | 1 |" in card  # grammar statistics: seed column
    for name, seed in (("gapped", 1), ("complexity", 7)):
        record = json.loads((out / name / "generation.json").read_text())
        assert record["params"]["seed"] == seed
        assert json.loads((out / name / "grammar.json").read_text())["params"]["seed"] == seed
        assert infos[name]["download_size"] == sum((out / name / f).stat().st_size
                                                   for f in os.listdir(out / name) if f.endswith(".parquet"))
        assert load_dataset(str(out), name)["validation"][2]["index"] == 2
    # issue 12: no language; the 1,601 state names written once and shared through a YAML alias
    assert "language" not in data
    assert card.count("'1600': ") == 1 and card.count("names: &") == 1 and card.count("names: *") == 1


def test_a_folder_with_files_of_others_is_refused_and_left_untouched(tmp_path):
    out = tmp_path / "data"
    out.mkdir()
    (out / "README.md").write_text("my own notes\n")
    with pytest.raises(ParameterError, match=r"out=.* is invalid: .*README.md was not written by selectivbench"):
        generate_folder(["gapped"], out, **SMALL)
    assert (out / "README.md").read_text() == "my own notes\n" and os.listdir(out) == ["README.md"]

    other = tmp_path / "other"
    generate_folder(["gapped"], other, **SMALL)
    (other / "LICENSE").write_text("mine")
    (other / "gapped" / "notes.txt").write_text("mine")
    before = snapshot(other)
    with pytest.raises(ParameterError, match=r"gapped/ .*did not write: \['notes.txt'\]"):
        generate_folder(["gapped"], other, **{**SMALL, "seed": 3})
    assert snapshot(other) == before
    (other / "gapped" / "notes.txt").unlink()
    generate_folder(["gapped"], other, **{**SMALL, "seed": 3})
    assert (other / "LICENSE").read_text() == "mine"  # a file of others beside the configs stays


def test_out_that_is_a_file_or_not_writable_fails_before_any_work(tmp_path):
    a_file = tmp_path / "file"
    a_file.write_text("x")
    with pytest.raises(ParameterError, match=r"out='.*file' is invalid: allowed a folder \(it is an existing file\)"):
        generate_folder(["gapped"], a_file, **SMALL)
    with pytest.raises(ParameterError,
                       match=r"out='.*file/sub' is invalid: allowed a folder that can be written "
                             r"\(.*file is not a folder\)"):
        generate_folder(["gapped"], a_file / "sub", **SMALL)
    assert a_file.read_text() == "x"


def test_empty_splits_are_left_out_and_the_folder_loads(tmp_path):
    out = tmp_path / "data"
    generate_folder(["generalization"], out, **{**SMALL, "num_validation": 0})
    ds = load_dataset(str(out), "generalization")
    assert sorted(ds) == ["test", "test_gap10", "test_gap100", "test_gap20", "test_gap50", "train"]
    assert {k: v.num_rows for k, v in ds.items()}["train"] == 20


def test_truncated_or_missing_parquet_gives_one_error_naming_the_file(tmp_path):
    out = tmp_path / "data"
    generate_folder(["distractor"], out, **SMALL)
    assert load_config_folder(out, "distractor")["test"].num_rows == 4
    test_file = out / "distractor" / "test-00000-of-00001.parquet"
    data = test_file.read_bytes()
    test_file.write_bytes(data[: len(data) // 2])
    with pytest.raises(ParameterError, match=r"file='.*distractor/test-00000-of-00001.parquet' is invalid"):
        load_config_folder(out, "distractor")
    test_file.unlink()
    with pytest.raises(ParameterError, match=r"file='.*test-00000-of-00001.parquet' is invalid"):
        check_config_folder(out, "distractor")
    with pytest.raises(ParameterError, match=r"file='.*gapped/generation.json' is invalid"):
        load_config_folder(out, "gapped")


def test_one_split_of_a_folder_loads_alone_with_its_features(tmp_path):
    out = tmp_path / "data"
    generate_folder(["complexity"], out, **SMALL)
    one = load_config_folder(out, "complexity", split="validation")
    whole = load_dataset(str(out), "complexity")["validation"]
    assert one.features == whole.features and one.features["labels"].feature.num_classes == 1601
    assert one[:] == whole[:]


def _generate_cmd(out, *args):
    return [sys.executable, "-m", "selectivbench", "generate", "complexity", "gapped", "--out", str(out), *args]


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL])
def test_killed_generate_leaves_the_old_folder_intact(tmp_path, sig):
    out = tmp_path / "data"
    generate_folder(["complexity", "gapped"], out, **SMALL)
    before = snapshot(out)
    # big enough to be killed while building: wait for its first parquet file, then kill
    proc = subprocess.Popen(_generate_cmd(out, "--seed", "7", "--num-train", "400000", "--seq-len", "40",
                                          "--num-proc", "2"), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while not list(out.glob(f"{BUILD_PREFIX}*/*.parquet")) and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    assert proc.poll() is None, proc.stderr.read().decode()
    workers = psutil.Process(proc.pid).children(recursive=True)
    proc.send_signal(sig)
    proc.wait(60)
    psutil.wait_procs(workers, timeout=60)  # after SIGKILL, orphaned workers stop before their next shard
    assert proc.returncode == (128 + sig if sig == signal.SIGTERM else -sig)
    leftovers = list(out.glob(f"{BUILD_PREFIX}*"))
    if sig == signal.SIGTERM:
        assert leftovers == []
    assert {k: v for k, v in snapshot(out).items() if not k.startswith(BUILD_PREFIX)} == before
    # the next run removes what a killed run left, and swaps in complete configs of the new seed
    generate_folder(["complexity"], out, **{**SMALL, "seed": 7})
    assert list(out.glob(f"{BUILD_PREFIX}*")) == []
    assert snapshot(out / "gapped") == {k[len("gapped/"):]: v for k, v in before.items() if k.startswith("gapped/")}
    for name, seed in (("complexity", 7), ("gapped", 1)):
        assert json.loads((out / name / "grammar.json").read_text())["params"]["seed"] == seed
        assert load_config_folder(out, name)["train"].num_rows == 20


def test_publish_rewrites_the_load_snippet_to_the_repo_id(tmp_path):
    out = tmp_path / "data"
    generate_folder(["gapped"], out, **SMALL)
    assert 'load_dataset("selectivbench", "gapped")' in (out / "README.md").read_text()
    files = publish_folder(out, "org/sb", dry_run=True)
    card = (out / "README.md").read_text()
    assert 'load_dataset("org/sb", "gapped")' in card and "selectivbench\", " not in card
    assert "README.md" in files and "gapped/generation.json" in files


def test_build_split_gives_the_builders_rows_alone_and_cached(tmp_path):
    p = task_params("generalization", seq_len=30)
    builder = SelectivBench(config_name="generalization", cache_dir=str(tmp_path / "b"), num_train=0,
                            num_validation=0, num_test=9, seq_len=30)
    builder.download_and_prepare()
    ref = builder.as_dataset("test_gap20")
    for procs in (None, 2):
        one = build_split(p, "test_gap20", 9, cache_dir=str(tmp_path / "s"), num_proc=procs)
        assert one.features == ref.features and one.data.table.equals(ref.data.table)
    assert len(list((tmp_path / "s").rglob("*.arrow"))) == 1  # the second call reused the cached file
    with pytest.raises(ParameterError, match="split='test_gap7' is invalid"):
        build_split(p, "test_gap7", 9)


def test_storage_dtypes_follow_the_parameters_and_impossible_ones_fail_up_front(tmp_path):
    tiny = dict(vocab_size=3, ambiguities=0, start_states=1)
    assert element_index_dtype(task_params("complexity", seq_len=32768, **tiny)) == "int16"
    long = task_params("complexity", seq_len=40000, **tiny)
    assert element_index_dtype(long) == "int32"
    ds = build_split(long, "validation", 1, cache_dir=str(tmp_path))
    elem = np.asarray(ds[0]["element_index"])
    assert ds.features["element_index"].feature.dtype == "int32"
    assert elem.max() == 39999 and np.array_equal(np.unique(elem), np.arange(40000))
    huge = dict(num_train=1, num_validation=1, num_test=1, **tiny)
    with pytest.raises(ParameterError, match="seq_len=2147483648 is invalid"):
        generate_folder(["complexity"], tmp_path / "never", seq_len=2**31, **huge)
    with pytest.raises(ParameterError, match="seq_len=300000000 is invalid: allowed a length whose samples"):
        generate_folder(["generalization"], tmp_path / "never", seq_len=300_000_000, **huge)
    assert not (tmp_path / "never").exists()


def test_parquet_row_groups_are_the_shards(tmp_path):
    out = tmp_path / "data"
    generate_folder(["gapped"], out, **{**SMALL, "num_train": 2500})
    meta = pq.ParquetFile(out / "gapped" / "train-00000-of-00001.parquet").metadata
    assert [meta.row_group(i).num_rows for i in range(meta.num_row_groups)] == [1000, 1000, 500]


def test_a_damaged_record_of_another_config_is_refused_before_any_build(tmp_path, monkeypatch):
    """The card is rebuilt from every config's record: a damaged one used to fail only after the new
    config had been built (and the build thrown away)."""
    import selectivbench.hub.dataset_folder as hub

    out = tmp_path / "data"
    generate_folder(["gapped"], out, **SMALL, grammar_rng="selectivbench")
    (out / "gapped" / "generation.json").write_text('{"format": "x"}')
    before = snapshot(out)
    monkeypatch.setattr(hub, "build_config", lambda *a, **k: pytest.fail("a config was built"))
    with pytest.raises(ParameterError, match=r"gapped/generation.json.* is invalid"):
        generate_folder(["complexity"], out, **SMALL, grammar_rng="selectivbench")
    assert snapshot(out) == before
    assert sorted(p.name for p in out.iterdir()) == ["README.md", "gapped", "selectivbench_card.json"]


def test_the_cards_example_is_a_sample_of_a_split_the_config_has(tmp_path):
    """Without a validation split the card showed a "first validation sample" that is in no split."""
    from selectivbench.builders import make_grammar
    from selectivbench.builders.sampler import Sampler
    from selectivbench.hub.dataset_card import render_sample

    out = tmp_path / "data"
    generate_folder(["complexity"], out, **{**SMALL, "num_validation": 0}, grammar_rng="selectivbench")
    card = (out / "README.md").read_text()
    p = task_params("complexity", seq_len=SMALL["seq_len"], grammar_rng="selectivbench")
    assert "First train sample of `complexity`" in card and "validation sample" not in card
    assert render_sample(Sampler(p, make_grammar(p)), "train") in card
