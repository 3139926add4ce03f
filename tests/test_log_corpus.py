"""Corrupted and odd training logs through `lossdiag diagnose`: never a traceback.

Every file ends in a report (exit 0/1) or in one line on standard error that names the file
and says what was expected (exit 2).  The corpus is generated here so that it covers the
families seen in the wild: broken CSV (ragged rows, huge cells, text, BOM, odd line ends),
broken JSON (truncated, deeply nested, huge integers, wrong types), Hugging Face states with
non-numeric or missing fields, Lightning files without numeric epochs, lossdiag JSON with
bad statistics or decreasing x, rows out of order, and unwritable --out paths.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from lossdiag.cli import main
from lossdiag.history import History, HistoryFormatError

GOOD_CSV = "epoch,loss,val_loss,accuracy,val_accuracy\n" + "".join(
    f"{e},{2.0 * 0.8 ** e:.4f},{2.1 * 0.82 ** e:.4f},{0.4 + 0.05 * e:.3f},{0.38 + 0.05 * e:.3f}\n"
    for e in range(10))


def _hf(entries: list) -> str:
    return json.dumps({"log_history": entries, "global_step": 100})


def corpus() -> dict[str, str | bytes]:
    """name -> file content (str written as UTF-8, bytes as they are)."""
    c: dict[str, str | bytes] = {}
    c["empty.csv"] = ""
    c["blank_lines.csv"] = "\n\n\n"
    c["header_only.csv"] = "epoch,loss,val_loss\n"
    c["no_separator.csv"] = "loss\n1\n2\n"
    c["ragged.csv"] = "epoch,loss,val_loss\n0,1,2\n1,2\n"
    c["huge_cell.csv"] = "epoch,loss,note\n0,1.0," + "x" * 200_000 + "\n1,0.9,y\n"
    c["text_column.csv"] = "epoch,when,loss,val_loss\n" + "".join(
        f"{e},2024-01-0{e + 1} 10:00,{1 - 0.1 * e},{1.1 - 0.1 * e}\n" for e in range(6))
    c["text_in_loss.csv"] = "epoch,loss\n0,abc\n1,def\n2,ghi\n"
    c["bom_crlf.csv"] = "\ufeff" + GOOD_CSV.replace("\n", "\r\n")
    c["cr_cr_lf.csv"] = GOOD_CSV.replace("\n", "\r\r\n")
    c["semicolon.csv"] = GOOD_CSV.replace(",", ";")
    c["duplicate_header.csv"] = "epoch,loss,loss\n0,1,1\n"
    c["empty_header_name.csv"] = "epoch,,loss\n0,1,1\n"
    c["reversed_rows.csv"] = GOOD_CSV.splitlines()[0] + "\n" + "\n".join(
        reversed(GOOD_CSV.splitlines()[1:])) + "\n"
    c["repeated_epoch.csv"] = "epoch,loss\n0,1\n1,0.9\n1,0.8\n2,0.7\n3,0.6\n"
    c["nan_epoch.csv"] = "epoch,loss\n0,1\nnan,0.9\n2,0.8\n3,0.7\n"
    c["two_runs.csv"] = GOOD_CSV + "".join(GOOD_CSV.splitlines(keepends=True)[1:])
    c["all_nan.csv"] = "epoch,loss,val_loss\n" + "".join(f"{e},nan,nan\n" for e in range(5))
    c["unknown_columns.csv"] = "iter,foo,bar\n1,2,3\n2,3,4\n"
    c["binary.bin"] = bytes(range(256)) * 4
    c["latin1.csv"] = "epoch,loss,note\n0,1.0,caf\xe9\n".encode("latin-1")
    c["big_numbers.csv"] = "epoch,loss\n0,1e400\n1,-1e400\n2,1e-400\n3,0.5\n4,0.4\n"
    c["truncated.json"] = '{"loss": [1.0, 0.9'
    c["nested.json"] = "[" * 100_000 + "]" * 100_000
    c["huge_int.json"] = '{"loss": [' + "1" * 5000 + ", 0.5, 0.4]}"
    c["ten_pow_400.json"] = json.dumps({"loss": [10**400, 0.5, 0.4, 0.3], "val_loss": [1, 1, 1, 1]})
    c["ragged.json"] = json.dumps({"loss": [1.0, 0.9, 0.8], "val_loss": [1.0]})
    c["strings.json"] = json.dumps({"loss": ["a", "b"], "val_loss": [1, 2]})
    c["bools.json"] = json.dumps({"loss": [True, False, True]})
    c["scalar.json"] = "42"
    c["string.json"] = '"hello"'
    c["null.json"] = "null"
    c["list_of_junk.json"] = json.dumps([1, "a", None])
    c["keras_epoch_desc.json"] = json.dumps({"epoch": [3, 2, 1], "loss": [1, 0.9, 0.8]})
    c["keras_epoch_dup.json"] = json.dumps({"epoch": [1, 1, 1], "loss": [1, 0.9, 0.8]})
    c["keras_nested_history.json"] = json.dumps({"history": {"loss": [[1, 2], [3]]}})
    c["hf_no_log.trainer_state.json"] = json.dumps({"global_step": 3})
    c["hf_log_not_list.trainer_state.json"] = json.dumps({"log_history": {"a": 1}})
    c["hf_strings.trainer_state.json"] = _hf(
        [{"step": "ten", "loss": "high", "epoch": "one"}, {"step": 20, "loss": [1, 2]},
         {"step": 30, "eval_loss": {"x": 1}, "epoch": None}, "junk", 5])
    c["hf_nan_steps.trainer_state.json"] = _hf(
        [{"step": float("nan"), "loss": 1.0}, {"step": 10, "loss": 0.9, "epoch": 0.1},
         {"step": 20, "loss": float("inf"), "grad_norm": float("nan"), "epoch": 0.2},
         {"step": 20, "eval_loss": 0.5, "epoch": 0.2}, {"step": 20, "eval_loss": 0.4}])
    c["hf_unsorted.trainer_state.json"] = _hf(
        [{"step": s, "loss": 2.0 / (1 + s), "epoch": s / 10} for s in (30, 10, 20, 50, 40)]
        + [{"step": 25, "eval_loss": 0.3, "epoch": 2.5}, {"step": 5, "eval_loss": 0.6}])
    c["hf_only_summary.trainer_state.json"] = _hf(
        [{"step": 100, "train_runtime": 1.0, "train_loss": 0.3}])
    c["lightning_text_epoch.metrics.csv"] = "epoch,step,train_loss\nx,0,1.0\ny,1,0.9\n"
    c["lightning_empty_epoch.metrics.csv"] = "epoch,step,train_loss\n,0,1.0\n,1,0.9\n"
    c["lightning_restart.metrics.csv"] = "epoch,step,val_loss\n" + "".join(
        f"{e},{s},{1 - 0.05 * e}\n" for s, e in enumerate([0, 1, 2, 3, 4, 5, 0, 1, 2, 3, 4, 5]))
    good = History.from_arrays(np.arange(6), train={"loss": [1, 0.9, 0.8, 0.7, 0.6, 0.5]})
    d = good.to_dict()
    c["lossdiag_ok.json"] = json.dumps(d)
    bad = dict(d, stats=[1, 2])
    c["lossdiag_stats_list.json"] = json.dumps(bad)
    bad = dict(d, stats={"99": {"ece": 1}})
    c["lossdiag_stats_index.json"] = json.dumps(bad)
    bad = dict(d, epochs={"x": [5, 4, 3, 2, 1, 0], "columns": d["epochs"]["columns"]})
    c["lossdiag_x_desc.json"] = json.dumps(bad)
    bad = dict(d, epochs={"x": [0, 1, "nan", 3, 4, 5], "columns": d["epochs"]["columns"]})
    c["lossdiag_x_nan.json"] = json.dumps(bad)
    bad = dict(d, epochs={"x": [0, 1], "columns": d["epochs"]["columns"]})
    c["lossdiag_x_short.json"] = json.dumps(bad)
    bad = dict(d, num_classes="ten")
    c["lossdiag_bad_classes.json"] = json.dumps(bad)
    return c


CORPUS = corpus()


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("corpus")
    for name, content in CORPUS.items():
        p = d / name
        if isinstance(content, bytes):
            p.write_bytes(content)
        else:
            p.write_text(content, encoding="utf-8", newline="")
    (d / "dir_metrics.csv").mkdir()
    (d / "dir_metrics.csv" / "metrics.csv").mkdir()
    (d / "emptydir").mkdir()
    return d


@pytest.mark.parametrize("name", sorted(CORPUS) + ["dir_metrics.csv", "emptydir"])
def test_every_odd_log_ends_in_a_report_or_a_named_error(files, name, capsys):
    path = files / name
    code = main(["diagnose", str(path)])
    out, err = capsys.readouterr()
    assert code in (0, 1, 2)
    if code == 2:
        lines = err.strip().splitlines()
        assert lines and lines[-1].startswith("lossdiag diagnose: error: ")
        assert str(path) in lines[-1] or name in lines[-1], err
        assert "Traceback" not in err
    else:
        assert out.startswith("lossdiag diagnosis of"), out
        assert "No problems found" not in out or "loss" in out


@pytest.mark.parametrize("name", ["reversed_rows.csv", "repeated_epoch.csv", "nan_epoch.csv",
                                  "keras_epoch_desc.json",
                                  "lossdiag_x_desc.json", "lossdiag_x_nan.json",
                                  "lossdiag_stats_list.json", "text_in_loss.csv"])
def test_rows_out_of_order_and_wrong_types_are_refused(files, name):
    with pytest.raises(HistoryFormatError) as info:
        History.from_path(files / name)
    assert name in str(info.value) and "expected" in str(info.value)


def test_an_epoch_column_that_never_changes_is_read_row_by_row_with_a_note(files):
    # CSVLogger(append=True) around fit(epochs=1) calls writes the same epoch on every row
    h = History.from_path(files / "keras_epoch_dup.json")
    assert h.epochs.tolist() == [0, 1, 2]
    assert any("on every row" in n for n in h.meta["notes"])


def test_a_log_holding_two_runs_keeps_the_last_with_a_note(files):
    h = History.from_path(files / "two_runs.csv")
    assert len(h) == 10 and h.epochs[0] == 0
    assert any("holds 2 runs" in n for n in h.meta["notes"])
    h = History.from_path(files / "lightning_restart.metrics.csv")
    assert len(h) == 6 and any("runs" in n for n in h.meta["notes"])


def test_huge_values_and_big_cells_are_read(files):
    h = History.from_path(files / "huge_cell.csv")
    assert h.train["loss"].tolist() == [1.0, 0.9]
    h = History.from_path(files / "ten_pow_400.json")
    assert math.isinf(h.train["loss"][0])
    h = History.from_path(files / "hf_unsorted.trainer_state.json")
    assert np.all(np.diff(h.steps) > 0) and np.all(np.diff(h.epochs) > 0)


def test_too_little_to_judge_is_said_and_exits_2(tmp_path, capsys):
    p = tmp_path / "two.csv"
    p.write_text("epoch,loss\n0,1.0\n1,0.9\n")
    assert main(["diagnose", str(p)]) == 2
    out, err = capsys.readouterr()
    assert "Too little to judge" in out and "No problems found" not in out
    assert str(p) in err and "too little to judge" in err
    p = tmp_path / "cols.csv"
    p.write_text("epoch,foo_metric\n0,1\n1,2\n2,3\n3,4\n")
    assert main(["diagnose", str(p)]) == 2
    out, err = capsys.readouterr()
    assert str(p) in err


def test_out_into_a_missing_directory_or_onto_a_directory(files, tmp_path, capsys):
    src = files / "bom_crlf.csv"
    assert main(["diagnose", str(src), "--out", str(tmp_path / "nope" / "r.html"),
                 "--format", "html"]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert main(["diagnose", str(src), "--out", str(tmp_path)]) == 2
    assert "is a directory" in capsys.readouterr().err
    assert main(["diagnose", str(src), "--out", str(tmp_path / "r.json"), "--format",
                 "json"]) == 0
    assert json.loads((tmp_path / "r.json").read_text())["schema"] == "lossdiag.diagnosis/1"
