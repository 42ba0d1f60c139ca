"""The training study: the float32 operator it trains with, its data and tasks, resumable training, and
the CPU smoke run of ``ropetheory train`` (a 2-layer model, a few dozen steps, evaluation at 2L and the
real-model analysis of its keys)."""
from __future__ import annotations

import json
import pathlib
import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import ropetheory as rt
from ropetheory.rope import TABLE_FLOAT32_ABS_ERR, rope_tables, rotate

from figure_files import no_figure_files

ROOT = pathlib.Path(__file__).resolve().parents[1]

#: rotating with float64 tables and with apply_rope use the same reduced angles and the same products:
#: at most a few roundings apart (|x| <= 1)
SAME_OPERATOR_ATOL = 1e-15
#: the smoke run's mean loss over its last 10 steps is this far below its first 10 (it falls ~1.5 nats
#: from ln(vocab); a model that learned nothing moves by the batch noise, ~0.05)
LOSS_FALL_NATS = 0.3


def test_float64_tables_rotate_exactly_as_apply_rope_at_any_offset():
    theta = rt.schedule("rope", head_dim=16, base=1e4).theta
    X = np.random.default_rng(0).uniform(-1, 1, (3, 40, 16))
    for offset in (0, 2 ** 33 + 5, 2 ** 61):
        c, s = rope_tables(theta, 40, offset=offset)
        for layout in ("interleaved", "half"):
            ref = np.asarray(rt.apply_rope(theta, X, offset=offset, layout=layout))
            got = np.asarray(rotate(jnp.asarray(X), jnp.asarray(c), jnp.asarray(s), layout=layout))
            assert np.max(np.abs(got - ref)) <= SAME_OPERATOR_ATOL


def test_float32_tables_are_the_exact_angles_rounded_once_even_where_float32_positions_fail():
    theta = rt.schedule("rope_id", head_dim=64, train_len=4096).theta
    offset = 2 ** 30
    c64, s64 = rope_tables(theta, 64, offset=offset)
    c32, s32 = rope_tables(theta, 64, offset=offset, dtype=np.float32)
    assert c32.dtype == np.float32
    err = max(np.max(np.abs(c32 - c64)), np.max(np.abs(s32 - s64)))
    assert err <= TABLE_FLOAT32_ABS_ERR
    naive = np.cos(np.float32(offset + np.arange(64, dtype=np.float32))[:, None] * theta.astype(np.float32))
    assert np.max(np.abs(naive - c64)) > 1000 * TABLE_FLOAT32_ABS_ERR      # what the tables avoid


def test_rotate_is_a_differentiable_isometry():
    theta = rt.schedule("rope", head_dim=8, base=100.0).theta
    c, s = (jnp.asarray(t, dtype=jnp.float32) for t in rope_tables(theta, 5, dtype=np.float32))
    X = jnp.asarray(np.random.default_rng(1).normal(size=(5, 8)), dtype=jnp.float32)
    g = jax.grad(lambda x: jnp.sum(rotate(x, c, s) ** 2))(X)
    assert g.dtype == jnp.float32
    np.testing.assert_allclose(np.asarray(g), 2 * np.asarray(X), rtol=1e-5)


def test_rotate_and_tables_refuse_mismatched_shapes_and_bad_arguments():
    c, s = rope_tables(np.ones(4), 6)
    with pytest.raises(ValueError, match="does not match tables"):
        rotate(jnp.zeros((6, 10)), jnp.asarray(c), jnp.asarray(s))
    with pytest.raises(ValueError, match="n must be an integer"):
        rope_tables(np.ones(4), -1)
    with pytest.raises(TypeError, match="dtype"):
        rope_tables(np.ones(4), 3, dtype=np.float16)
    with pytest.raises(ValueError, match="layout"):
        rotate(jnp.zeros((6, 8)), jnp.asarray(c), jnp.asarray(s), layout="rotate_half")


# ---------------------------------------------------------------- data and tasks
@pytest.fixture(scope="module")
def small_corpus(tmp_path_factory):
    from ropetheory.training import corpus, tasks
    folder = tmp_path_factory.mktemp("corpus")
    return folder, corpus.build_corpus(folder, max_bytes=150_000, vocab_size=256, templates=tasks.TEMPLATES, quiet=True)


def test_corpus_is_compact_ids_with_every_task_token_and_a_recipe(small_corpus):
    folder, d = small_corpus
    r = d["recipe"]
    for split in ("train", "heldout"):
        assert d[split].size > 2000 and d[split].max() < 256
    assert len(set(r["digit_ids"])) == 10 and all(i >= 2 for i in r["digit_ids"])       # not BOS or UNK
    assert all(i >= 2 for t in r["templates"].values() for i in t)
    held = {f["name"] for f in r["files"] if f["split"] == "heldout"}
    assert held and not held & {f["name"] for f in r["files"] if f["split"] == "train"}
    assert 0 < r["unk_fraction_train"] < 0.5


def test_corpus_is_rebuilt_for_other_parameters_and_refused_when_damaged(small_corpus, tmp_path):
    import shutil
    from ropetheory.training import corpus, tasks
    folder, d = small_corpus
    copy = tmp_path / "c"
    shutil.copytree(folder, copy)
    again = corpus.build_corpus(copy, max_bytes=150_000, vocab_size=256, templates=tasks.TEMPLATES, quiet=True)
    assert again["recipe"]["sha256"] == d["recipe"]["sha256"]                  # same parameters: loaded
    other = corpus.build_corpus(copy, max_bytes=150_000, vocab_size=200, templates=tasks.TEMPLATES, quiet=True)
    assert other["train"].max() < 200
    raw = bytearray((copy / "data.npz").read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    (copy / "data.npz").write_bytes(bytes(raw))
    with pytest.raises(ValueError, match="data.npz"):
        corpus.load_corpus(copy)


def test_the_recipe_fingerprints_the_exact_token_ids_and_a_changed_corpus_gets_another_run_key(small_corpus,
                                                                                              tmp_path):
    import json
    import shutil
    from ropetheory.store import token_ids_sha256
    from ropetheory.training import corpus
    from ropetheory.training.loop import run_key
    folder, d = small_corpus
    sha = d["recipe"]["tokens_sha256"]
    assert sha == token_ids_sha256(d["train"], d["heldout"], d["vocab"])
    changed = d["train"].copy()
    changed[100] = (changed[100] + 1) % 256                    # one token of the corpus differs
    other = token_ids_sha256(changed, d["heldout"], d["vocab"])
    assert other != sha and run_key(_tiny(), other) != run_key(_tiny(), sha)
    copy = tmp_path / "c"
    shutil.copytree(folder, copy)
    recipe = json.loads((copy / "data.json").read_text())
    recipe["tokens_sha256"] = other                            # a recipe that vouches for other ids
    (copy / "data.json").write_text(json.dumps(recipe))
    with pytest.raises(ValueError, match="tokens_sha256"):
        corpus.load_corpus(copy)


@pytest.mark.parametrize("kind", ["passkey", "kv"])
@pytest.mark.parametrize("depth", [0.0, 0.5, 1.0])
def test_a_retrieval_row_ends_with_the_answer_its_needle_holds(small_corpus, kind, depth):
    from ropetheory.training.tasks import ANSWER_DIGITS, KV_PAIRS, task_rows
    _, d = small_corpus
    r = d["recipe"]
    dig = np.asarray(r["digit_ids"])
    rows = task_rows(np.random.default_rng(3), d["heldout"], 300, 4, kind=kind, depth=depth,
                     templates=r["templates"], digit_ids=r["digit_ids"])
    needle = np.asarray(r["templates"]["pk_needle" if kind == "passkey" else "kv_pair"])
    slots = np.flatnonzero(np.isin(needle, dig))
    for row in rows:
        assert row.size == 300 and row[0] == 0
        answer = row[-ANSWER_DIGITS:]
        # the needles: windows matching the template outside its digit slots
        starts = [i for i in range(1, row.size - needle.size) if np.array_equal(
            np.delete(row[i:i + needle.size], slots), np.delete(needle, slots))]
        assert len(starts) == (1 if kind == "passkey" else KV_PAIRS)
        held = [row[i + slots][-ANSWER_DIGITS:] for i in starts]
        assert any(np.array_equal(h, answer) for h in held)
        if kind == "passkey":
            filler = 300 - 1 - needle.size - len(r["templates"]["pk_query"])
            assert starts[0] == 1 + round(depth * filler)


def test_task_rows_refuse_a_length_too_short_and_a_bad_depth(small_corpus):
    from ropetheory.training.tasks import task_rows
    _, d = small_corpus
    kw = {"templates": d["recipe"]["templates"], "digit_ids": d["recipe"]["digit_ids"]}
    with pytest.raises(ValueError, match="needs more than"):
        task_rows(np.random.default_rng(0), d["heldout"], 30, 1, kind="kv", depth=0.5, **kw)
    with pytest.raises(ValueError, match="depth"):
        task_rows(np.random.default_rng(0), d["heldout"], 200, 1, kind="passkey", depth=1.5, **kw)
    with pytest.raises(ValueError, match="kind"):
        task_rows(np.random.default_rng(0), d["heldout"], 200, 1, kind="needle", depth=0.5, **kw)


# ---------------------------------------------------------------- training
def _tiny(**kw):
    from ropetheory.training.loop import TrainConfig
    from ropetheory.training.model import ModelConfig
    base = {"model": ModelConfig(vocab=256, d_model=32, layers=1, heads=2), "train_len": 128, "batch": 4, "steps": 4,
            "steps_per_call": 2, "seeds": (0,), "schedules": ("rope", "nope"), "lr": 3e-3, "warmup": 1}
    return TrainConfig(**{**base, **kw})


def _leaves(run):
    import equinox as eqx
    return [np.asarray(x) for x in jax.tree_util.tree_leaves(eqx.filter(run["models"], eqx.is_array))]


def test_training_killed_after_a_checkpoint_resumes_to_the_same_weights(small_corpus, tmp_path):
    from ropetheory.training.loop import train
    _, d = small_corpus
    cfg = _tiny()
    ref = train(cfg, d, tmp_path / "ref", checkpoint_every=0)

    class Killed(Exception):
        pass

    def kill(step, _):
        if step == 2:
            raise Killed
    with pytest.raises(Killed):
        train(cfg, d, tmp_path / "cut", checkpoint_every=0, on_log=kill)
    steps_run = []
    resumed = train(cfg, d, tmp_path / "cut", checkpoint_every=0, on_log=lambda s, _: steps_run.append(s))
    assert steps_run == [4]                                   # only the missing steps
    for a, b in zip(_leaves(ref), _leaves(resumed), strict=False):
        np.testing.assert_array_equal(a, b)
    assert [r["loss"] for r in resumed["log"]] == [r["loss"] for r in ref["log"]]
    # the same schedules paired by seed start equal; other parameters never reuse the checkpoint (reported)
    with pytest.warns(UserWarning, match="train.ckpt.*other parameters, other code"):
        other = train(_tiny(lr=1e-3), d, tmp_path / "cut", checkpoint_every=0,
                      on_log=lambda s, _: steps_run.append(s))
    assert steps_run[-2:] == [2, 4] and other["key"] != ref["key"]


@pytest.mark.parametrize("kw, match", [
    ({"steps": 0}, "steps"), ({"train_len": 32}, "train_len"), ({"lr": 2.0}, "lr"),
    ({"schedules": ("rope", "alibi")}, "schedules"), ({"seeds": (1, 1)}, "seeds"),
    ({"train_len": 64, "schedules": ("rope_id",)}, "rope_id needs"),
])
def test_training_configuration_refuses_bad_values_by_name(kw, match):
    with pytest.raises(ValueError, match=match):
        _tiny(**kw)


def test_model_configuration_refuses_heads_that_do_not_split_the_width():
    from ropetheory.training.model import ModelConfig
    with pytest.raises(ValueError, match="heads"):
        ModelConfig(d_model=30, heads=4)
    with pytest.raises(ValueError, match="layers"):
        ModelConfig(layers=0)


# ---------------------------------------------------------------- the study, end to end on CPU
def _cli(*args):
    """``ropetheory train ARGS`` through ``cli.main`` in this process: (exit code, stderr)."""
    import contextlib
    import io
    from ropetheory import cli
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        rc = cli.main(["train", *args])
    return types.SimpleNamespace(returncode=rc, stderr=err.getvalue())


def test_smoke_study_trains_evaluates_at_2L_and_analyses_the_trained_keys(small_corpus, tmp_path):
    folder, _ = small_corpus
    out = tmp_path / "run"
    args = ("--preset", "smoke", "--out", str(out), "--data", str(folder), "--max-bytes", "150000", "--vocab", "256")
    r = _cli(*args, "--quiet")
    assert r.returncode == 0, r.stderr[-3000:]
    log = (out / "train_log.csv").read_text().splitlines()
    first, last = (np.array(row.split(","), dtype=float)[1:] for row in (log[1], log[-1]))
    assert len(log) >= 4 and np.all(last < first - LOSS_FALL_NATS)      # the loss falls for every model
    s = json.loads((out / "summary.json").read_text())
    L = s["config"]["train_len"]
    assert s["evals"] and all(e["lengths"] == [L, 2 * L] and np.all(np.isfinite(e["ppl"])) for e in s["evals"])
    assert {e["variant"] for e in s["evals"]} == {"rope", "rope_id", "rope+pi", "rope+yarn", "rope_id+temp"}
    geo = {g["schedule"]: g for g in s["geometry"]}
    assert set(geo) == {"rope", "rope_id"}
    # the theory's floors: RoPE-ID keeps its NoPE half (floor >= sqrt(1/2) of a balanced split is not
    # promised, but it is far above RoPE's); RoPE-ID's heads reach theirs within L, RoPE's do not
    assert geo["rope_id"]["floor"] > geo["rope"]["floor"]
    assert geo["rope_id"]["C2_frac"] > geo["rope"]["C2_frac"]
    heads = json.loads((out / "analysis" / "rope_seed0.json").read_text())["heads"]
    assert all(0 < h["predicted_floor"] <= 1 and len(h["rho_measured"]) > 3 for h in heads)
    for f in ("table.csv", "per_model.csv", "correlations.csv", "claims.json", "train_ppl.png", "train_geometry.png"):
        assert (out / f).stat().st_size > 100
    # --plot-only redraws every derived number from the saved ones alone (resuming: the training test above);
    # its figures are drawn, their files not written: test_the_committed_figures_redraw_... renders them
    (out / "table.csv").unlink()
    with no_figure_files():
        r3 = _cli("--out", str(out), "--plot-only")
    assert r3.returncode == 0 and (out / "table.csv").exists()


def test_train_command_refuses_bad_flags_in_one_line():
    r = _cli("--preset", "smoke", "--steps", "0", "--out", "/nonexistent/x")
    assert r.returncode == 2 and "--steps must be an integer >= 1" in r.stderr and "Traceback" not in r.stderr
    r = _cli("--plot-only", "--out", "/nonexistent/x")
    assert r.returncode == 2 and "Traceback" not in r.stderr


# ---------------------------------------------------------------- the committed study
DOCS = ROOT / "docs" / "training"


def test_readme_and_guide_show_the_table_derived_from_the_committed_numbers():
    from ropetheory.studies.train_report import derive, markdown_table
    s = json.loads((DOCS / "summary.json").read_text())
    table = markdown_table({**s, **derive(s)})
    assert table == (DOCS / "table.md").read_text()
    for page in (ROOT / "README.md", ROOT / "docs" / "guide" / "training.md"):
        assert table.split("\n\n")[0] in page.read_text(), page
    assert len(s["evals"]) == len(s["config"]["seeds"]) * 8 and len(s["geometry"]) == 15


def _row(variant, **cols):
    return {"variant": variant, **cols}


def test_the_ordering_claim_needs_strict_ranks_and_ties_do_not_confirm_it():
    from ropetheory.studies.train_report import claims
    ok = [_row("rope", acc_2L=0.1), _row("half_rope", acc_2L=0.2), _row("rope_id", acc_2L=0.5),
          _row("rope+yarn", acc_2L=0.9)]                                   # YaRN is outside the claim
    (c,) = claims(ok, multiples=(2,))
    assert c["holds"] and c["best"] == "rope_id" and c["best_of_all_variants"] == "rope+yarn"
    tie = [_row("rope", acc_2L=0.0), _row("half_rope", acc_2L=0.0), _row("rope_id", acc_2L=0.0)]
    assert not claims(tie, multiples=(2,))[0]["holds"]
    ppl = [_row("rope", ppl_2L=90.0), _row("half_rope", ppl_2L=95.0), _row("rope_id", ppl_2L=50.0)]
    (c,) = claims(ppl, multiples=(2,))
    assert not c["holds"] and c["worst"] == "half_rope"                    # lower perplexity is better


def test_correlations_are_spearman_with_p_values_and_none_when_undefined():
    from ropetheory.studies.train_report import correlations
    rows = [{"floor": f, "dist_floor_L": 0.1, "drift_L_4L": None, "sink_drop": f, "acc_2L": a, "ppl_2L": 1.0}
            for f, a in ((0.1, 0.0), (0.2, 0.1), (0.3, 0.3), (0.4, 0.35))]
    got = {(c["measure"], c["outcome"]): c for c in correlations(rows)}
    assert got[("floor", "acc_2L")]["spearman"] == pytest.approx(1.0) and got[("floor", "acc_2L")]["p_value"] < 0.1
    assert got[("dist_floor_L", "acc_2L")]["spearman"] is None                # a constant measure
    assert got[("drift_L_4L", "acc_2L")]["n_models"] == 0
    assert got[("floor", "ppl_2L")]["spearman"] is None                       # a constant outcome


def test_the_committed_figures_redraw_from_the_committed_numbers_alone(tmp_path):
    import shutil
    from ropetheory.studies.train_report import FIGURES, report
    copy = tmp_path / "docs"
    shutil.copytree(DOCS, copy, ignore=shutil.ignore_patterns("*.png", "table.csv"))
    paths = report(copy)
    assert sorted(p.name for p in paths) == sorted(FIGURES) and (copy / "table.csv").exists()
    assert (copy / "table.md").read_text() == (DOCS / "table.md").read_text()
