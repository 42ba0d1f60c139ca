"""The resumable journal: a rerun skips saved rows, and rows that are cut, malformed, edited or written
by other code are reported and recomputed, never reused."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest

from ropetheory.store import Journal


def _fill(path, code="A"):
    j = Journal(path, code=code)
    for k in range(4):
        j.add(f"case{k}", {"k": k, "x": k / 3, "nan": math.nan})
    return j


def test_a_rerun_with_the_same_code_loads_every_row_and_computes_none(tmp_path):
    p = tmp_path / "j.jsonl"
    _fill(p)
    j = Journal(p, code="A")
    assert j.loaded == 4 and j.added == 0 and j.rows["case1"]["x"] == 1 / 3


def test_rows_from_other_code_are_recomputed(tmp_path):
    p = tmp_path / "j.jsonl"
    _fill(p, code="A")
    with pytest.warns(UserWarning, match="other code"):
        j = Journal(p, code="B")
    assert j.loaded == 0 and "case0" not in j


@pytest.mark.parametrize("damage, match", [
    (lambda lines: lines[:1] + [lines[1][: len(lines[1]) // 2]] + lines[2:], "not JSON"),
    (lambda lines: lines[:1] + ['["a list"]'] + lines[2:], "not a journal record"),
    (lambda lines: lines[:1] + [lines[1].replace('"k": 1', '"k": 7')] + lines[2:], "checksum"),
    (lambda lines: lines[:1] + [json.dumps({"key": "case1", "row": {"k": 1}})] + lines[2:], "checksum")])
def test_a_damaged_row_is_reported_by_file_and_line_and_recomputed(tmp_path, damage, match):
    p = tmp_path / "j.jsonl"
    _fill(p)
    p.write_text("\n".join(damage(p.read_text().splitlines())) + "\n")
    with pytest.warns(UserWarning, match=match) as rec:
        j = Journal(p, code="A")
    assert "j.jsonl" in str(rec[0].message) and "line 2" in str(rec[0].message)
    assert j.loaded == 3 and "case1" not in j and j.rows["case2"]["k"] == 2


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf, "nan", "inf"])
def test_writers_refuse_non_finite_numbers_naming_the_field(tmp_path, bad):
    from ropetheory.store import write_csv, write_json
    with pytest.raises(ValueError, match=r"out.csv\[1\].x"):
        write_csv(tmp_path / "out.csv", [{"x": 1.0}, {"x": bad}])
    with pytest.raises(ValueError, match=r"out.json.rows\[0\].y"):
        write_json(tmp_path / "out.json", {"rows": [{"y": bad}]})
    assert not (tmp_path / "out.csv").exists() and not (tmp_path / "out.json").exists()
    write_json(tmp_path / "ok.json", {"undefined": None})               # an explicit None is written as null


def test_a_row_keyed_by_other_parameters_is_computed_not_reused(tmp_path):
    """Keys carry the parameters: asking for another parameter set finds nothing to reuse."""
    p = tmp_path / "j.jsonl"
    def key(L, tol):
        return f"L={L}|tol={tol!r}"

    j = Journal(p, code="A")
    j.add(key(4096, 0.01), {"rho": 0.5})
    j2 = Journal(p, code="A")
    assert key(4096, 0.01) in j2 and j2.loaded == 1
    assert key(4096, 0.02) not in j2 and key(8192, 0.01) not in j2


def test_an_atomic_write_leaves_the_old_file_on_error_and_its_temporary_never_matches_the_suffix(tmp_path):
    from ropetheory.store import PartStore, atomic_open
    target = tmp_path / "part.npz"
    target.write_bytes(b"old")
    with pytest.raises(RuntimeError), atomic_open(target) as fh:
        fh.write(b"half a file")
        assert list(tmp_path.glob("*.npz")) == [target]     # the write in progress is not a part
        raise RuntimeError("killed mid-write")
    assert target.read_bytes() == b"old" and sorted(p.name for p in tmp_path.iterdir()) == ["part.npz"]
    store = PartStore(tmp_path / "parts", code="c")
    store.put("a", "k", x=np.arange(3.0))
    assert [p.name for p in (tmp_path / "parts").iterdir()] == ["a.npz"]
    np.testing.assert_array_equal(store.get("a", "k")["x"], np.arange(3.0))


def test_a_changed_formula_in_a_dependency_changes_the_derived_code_hash_and_an_unrelated_module_does_not(tmp_path):
    """The code fingerprint of a study is derived from what it imports, transitively: edit a formula deep
    below figure 7 (the exact angles) and its stored parts no longer match; edit a module figure 7 never
    imports (the real-model claims) and they still do."""
    import os
    import pathlib
    import shutil
    import subprocess
    import sys

    import ropetheory
    src = pathlib.Path(ropetheory.__file__).parent
    ask = "from ropetheory.studies import figure7, verify; print(figure7.code_hash(), verify.code_hash())"

    def hashes(root):
        return subprocess.run([sys.executable, "-c", ask], env={**os.environ, "PYTHONPATH": str(root)}, cwd=root,
                              capture_output=True, text=True, check=True).stdout.split()

    copy = tmp_path / "ropetheory"
    shutil.copytree(src, copy, ignore=shutil.ignore_patterns("__pycache__", "data"))
    shutil.copytree(src / "data", copy / "data")
    before = hashes(tmp_path)
    claims = copy / "models" / "claims.py"
    claims.write_text(claims.read_text().replace("CLOSE_TO_ONE = 0.7", "CLOSE_TO_ONE = 0.8"))
    assert hashes(tmp_path) == before
    angles = copy / "core" / "angles.py"
    text = angles.read_text()
    assert "return acc - (acc >= 0.5)" in text
    angles.write_text(text.replace("return acc - (acc >= 0.5)", "return acc - (acc > 0.5)"))
    after = hashes(tmp_path)
    assert after[0] != before[0] and after[1] != before[1]


def test_recorded_stores_lists_only_the_stores_opened_inside_the_block(tmp_path):
    """A command reports the stores it opened; a store opened elsewhere is in no list (no process-wide log)."""
    from ropetheory.store import PartStore, recorded_stores
    before = Journal(tmp_path / "before.jsonl", code="A")
    with recorded_stores() as outer:
        j = _fill(tmp_path / "j.jsonl")
        with recorded_stores() as inner:
            parts = PartStore(tmp_path / "parts", code="c")
    after = Journal(tmp_path / "after.jsonl", code="A")
    assert outer == [j, parts] and inner == [parts]
    assert before not in outer and after not in outer
    assert j.describe().endswith("0 saved row(s) kept, 4 computed")


def test_the_save_hook_runs_after_each_saved_row_and_part_and_nothing_runs_without_it(tmp_path, monkeypatch):
    from ropetheory import store
    seen: list[int] = []
    j = Journal(tmp_path / "j.jsonl", code="A")
    monkeypatch.setattr(store, "SAVE_HOOK", lambda: seen.append(len(j.rows)))
    j.add("a", {"x": 1})
    store.PartStore(tmp_path / "parts", code="c").put("p", "k", x=np.zeros(2))
    assert seen == [1, 1]
    monkeypatch.setattr(store, "SAVE_HOOK", None)
    j.add("b", {"x": 2})
    assert seen == [1, 1]


def test_a_checkpoint_is_arrays_and_json_and_one_for_other_parameters_or_damaged_is_warned_and_unused(tmp_path):
    """One checkpoint format for every long run: an npz of arrays with a JSON manifest (loadable with
    ``allow_pickle=False``); a checkpoint saved under another key (parameters or code) or damaged is
    reported by a warning naming the file, and the run recomputes."""
    from ropetheory.store import load_checkpoint, save_checkpoint
    ck = tmp_path / "run.ckpt"
    save_checkpoint(ck, "params+code", {"x": np.arange(3.0), "m": np.array([1, 2], np.int32)}, step=7, log=[{"a": 0.5}])
    arrays, meta = load_checkpoint(ck, "params+code")
    np.testing.assert_array_equal(arrays["x"], np.arange(3.0))
    assert arrays["m"].dtype == np.int32 and meta == {"step": 7, "log": [{"a": 0.5}]}
    with np.load(ck, allow_pickle=False) as z:                   # plain arrays, nothing pickled
        assert set(z.files) == {"_manifest", "x", "m"}
    with pytest.warns(UserWarning, match="run.ckpt.*other parameters, other code"):
        assert load_checkpoint(ck, "params+other-code") is None

    def refuse(arrays, meta):
        raise ValueError("inconsistent")
    with pytest.warns(UserWarning, match="run.ckpt.*damaged.*inconsistent"):
        assert load_checkpoint(ck, "params+code", refuse) is None
    ck.write_bytes(ck.read_bytes()[:40])                          # cut by a kill mid-copy
    with pytest.warns(UserWarning, match="run.ckpt.*damaged"):
        assert load_checkpoint(ck, "params+code") is None
    assert load_checkpoint(tmp_path / "none.ckpt", "params+code") is None


def test_token_ids_fingerprint_is_of_the_ids_not_their_integer_type_nor_their_text():
    import numpy as np
    from ropetheory.store import token_ids_sha256
    ids = [3, 1, 4, 1, 5]
    assert token_ids_sha256(ids) == token_ids_sha256(np.array(ids, dtype=np.uint16))
    assert token_ids_sha256(ids) != token_ids_sha256([3, 1, 4, 1, 6])
    assert token_ids_sha256([1, 2], [3]) != token_ids_sha256([1], [2, 3])      # where a split ends counts
