"""One rule per idea: evaluation tables follow files.py's ownership rule (a sha256 record)."""
import hashlib
import json
import re

import pytest

from selectivbench.errors import ParameterError
from selectivbench.evaluation.tables import FIELDS, TABLES_RECORD, TABLES_WRITER, append_rows, check_table_path

ROW = {k: 1 for k in FIELDS}


def refusal(path):
    return (r"out=.* is invalid: allowed a new table or one written by `selectivbench evaluate` \("
            + re.escape(str(path)) + " has other content")


@pytest.mark.parametrize("name", ["eval.csv", "eval.jsonl"])
def test_a_table_the_user_edited_is_kept_and_named(tmp_path, name):
    """Still evaluate's shape (its header, its keys), but edited: never appended to again."""
    out = tmp_path / "eval"
    append_rows(str(out), [ROW])
    table = tmp_path / name
    edited = table.read_text().replace("1", "2", 1)
    table.write_text(edited)
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    with pytest.raises(ParameterError, match=refusal(table)):
        check_table_path(str(out))  # what evaluate checks before any work
    with pytest.raises(ParameterError, match=refusal(table)):
        append_rows(str(out), [ROW])
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before


def test_a_table_of_evaluates_shape_it_did_not_write_is_refused(tmp_path):
    (tmp_path / "eval.csv").write_text(",".join(FIELDS) + "\n")
    with pytest.raises(ParameterError, match=refusal(tmp_path / "eval.csv")):
        append_rows(str(tmp_path / "eval"), [ROW])
    assert [p.name for p in tmp_path.iterdir()] == ["eval.csv"]


def test_appends_keep_the_record_on_the_tables_bytes(tmp_path):
    out = tmp_path / "eval"
    append_rows(str(out), [ROW])
    append_rows(str(out), [{**ROW, "model": "second"}])
    record = json.loads((tmp_path / TABLES_RECORD).read_text())
    tables = {name: (tmp_path / name).read_bytes() for name in ("eval.csv", "eval.jsonl")}
    assert record == {"written_by": TABLES_WRITER,
                      "files": {name: [hashlib.sha256(data).hexdigest()] for name, data in tables.items()}}
    assert [json.loads(line)["model"] for line in tables["eval.jsonl"].decode().splitlines()] == [1, "second"]
    assert len(tables["eval.csv"].decode().splitlines()) == 3


def test_a_users_file_named_as_the_record_is_kept_and_named(tmp_path):
    (tmp_path / TABLES_RECORD).write_text("my notes\n")
    with pytest.raises(ParameterError, match=re.escape(f"{tmp_path / TABLES_RECORD} is another file; move it away")):
        append_rows(str(tmp_path / "eval"), [ROW])
    assert [p.name for p in tmp_path.iterdir()] == [TABLES_RECORD]
