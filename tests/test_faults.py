"""Fault tests: every resumable command, killed twice at random points (SIGINT, then SIGKILL), resumes
to identical CSV files (every byte of every cell but run times) and the final run computes exactly what was missing.

The kill points come from ``tests/fault_runner.py``'s hook (``ropetheory.store.SAVE_HOOK``), which sends
the signal right after the k-th row or part is saved, k drawn at random per command (seeded, so a failure
reproduces). The SIGKILL is a real kill of a fresh process (``python tests/fault_runner.py``), which first
resumes what the interrupted run left; the reference run, the SIGINT (delivered to this test process,
where ``cli.main`` turns it into exit code 130) and the final resume run ``cli.main`` here, in the test
process, whose imports and compiled programs they share. Sizes are small so the whole matrix runs in CI;
the mechanism does not depend on size. The runs here write no figure files (``figure_files.no_figure_files``:
laying out and rendering the PNGs and PDFs is most of a small ``analyze`` run, and only CSVs are compared), except
the final resumed run of a command whose figures no other test renders.
"""
from __future__ import annotations

import contextlib
import io
import os
import pathlib
import re
import signal
import subprocess
import sys

import numpy as np
import pytest

from figure_files import no_figure_files

ROOT = pathlib.Path(__file__).resolve().parents[1]
#: command -> small arguments (each saves several rows or parts)
COMMANDS = {
    # the claim rows at one small head width (24 rows) and the 6 counter-examples: the report's rows at
    # d = 80 and 128 are checked in test_theorems
    "verify": ["--head-dims", "16"],
    "fig7": ["--clouds", "4", "--n-max", "2e5", "--num", "8", "--head-dims", "16"],
    "sinks": ["--min-log2", "8", "--max-log2", "9"],
    "sweep": ["--clouds", "4", "--num", "8", "--n-max", "1e5", "--head-dims", "16,32",
              "--schedules", '[{"name": "rope"}, {"name": "rope_id", "train_len": 512}]'],
    "beyond": ["--scale", "tiny"],
    "extension": ["--clouds", "1", "--num", "4"],
    "basebound": ["--lengths", "128,256,512", "--head-dim", "32", "--b-min", "10", "--b-max", "1e4"],
    # the real-model analysis on a Llama checkpoint folder (TINY_LLAMA: random weights, SmolLM2's tokenizer;
    # the packaged SmolLM2 itself is analysed end to end in test_models), 192 tokens in 6 chunks, a
    # checkpoint after each
    "analyze": ["--model", "{tiny_llama}", "--max-tokens", "192", "--tokens-per-pass", "32", "--train-len", "64",
                "--checkpoint-every", "0"],
}
#: commands whose figures other tests render from their saved numbers (here they are drawn, not written)
FIGURES_RENDERED_ELSEWHERE = {"analyze": "test_models, test_sink_heads", "fig7": "test_figure7",
                              "extension": "test_extension", "sinks": "test_sinks", "basebound": "test_figures_redraw"}
#: the checkpoint folder the analyze fault test reads: 2 layers, width 64, 4 query / 2 key-value heads
TINY_LLAMA = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                  num_key_value_heads=2, max_position_embeddings=4096, rope_theta=10000.0, tie_word_embeddings=True)


@pytest.fixture(scope="module")
def tiny_llama(tmp_path_factory):
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM
    from ropetheory.models.registry import load_tokenizer
    folder = tmp_path_factory.mktemp("models") / "tiny-llama"
    tok = load_tokenizer("smollm2-135m")
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=len(tok), bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, **TINY_LLAMA)
    LlamaForCausalLM(cfg).save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


COUNT = re.compile(r": (\d+) saved (?:row|part)\(s\) kept, (\d+) computed")


def _argv(cmd, out, model):
    return [cmd, *(a.replace("{tiny_llama}", str(model)) for a in COMMANDS[cmd]), "--out", str(out), "--quiet"]


def _counts(stderr):
    return [tuple(map(int, m)) for m in COUNT.findall(stderr)]


def _run_killed(cmd, out, fault, model=None):
    """``cmd`` in a fresh process (``tests/fault_runner.py``) that receives ``fault`` (``NAME:k``)."""
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "PYTHONPATH": str(ROOT)}   # with conftest's JAX cache
    r = subprocess.run([sys.executable, str(ROOT / "tests" / "fault_runner.py"), fault, *_argv(cmd, out, model)],
                       env=env, capture_output=True, text=True, timeout=600)
    return r.returncode, r.stderr


def _run_here(cmd, out, fault=None, model=None, figure_files=True):
    """``cmd`` through ``cli.main`` in this process: (exit code, stderr). ``fault`` (``SIGINT:k``) sends
    SIGINT to this process after the k-th saved unit, with Python's own handler (KeyboardInterrupt).
    ``figure_files=False``: the figures are drawn but their files not written (``no_figure_files``)."""
    from fault_runner import signal_after
    from ropetheory import cli, store
    err = io.StringIO()
    hook, handler = store.SAVE_HOOK, signal.getsignal(signal.SIGINT)
    store.SAVE_HOOK = signal_after(fault) if fault else None
    signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()), \
                (contextlib.nullcontext() if figure_files else no_figure_files()):
            rc = cli.main(_argv(cmd, out, model))
    except KeyboardInterrupt:
        pytest.fail(f"ropetheory {cmd}: the interrupt escaped cli.main\n{err.getvalue()[-3000:]}")
    finally:
        store.SAVE_HOOK = hook
        signal.signal(signal.SIGINT, handler)
    return rc, err.getvalue()


#: columns that record how long a run took (the base-bound table reports its run time): not compared
TIMING_COLUMNS = {"seconds"}


def _csvs(folder):
    """Every CSV under ``folder``, byte for byte, except timing columns."""
    import csv
    out = {}
    for p in sorted(folder.rglob("*.csv")):
        rows = list(csv.reader(io.StringIO(p.read_text())))
        drop = {i for i, c in enumerate(rows[0]) if c in TIMING_COLUMNS} if rows else set()
        out[p.relative_to(folder)] = [[c for i, c in enumerate(r) if i not in drop] for r in rows]
    return out


@pytest.mark.parametrize("cmd", sorted(COMMANDS))
def test_killed_twice_then_resumed_gives_identical_files_and_computes_only_what_was_missing(cmd, tmp_path, request):
    ref, cut = tmp_path / "ref", tmp_path / "cut"
    model = request.getfixturevalue("tiny_llama") if cmd == "analyze" else None
    r, err = _run_here(cmd, ref, model=model, figure_files=False)
    assert r == 0, err[-3000:]
    counts = _counts(err)
    total = sum(c for _, c in counts)
    assert total >= 3 and all(k == 0 for k, _ in counts)
    rng = np.random.default_rng(sum(map(ord, cmd)))
    k1 = int(rng.integers(1, total // 2 + 1))
    k2 = int(rng.integers(1, total - k1))
    r1, err1 = _run_here(cmd, cut, f"SIGINT:{k1}", model=model)
    assert r1 == 130, err1[-3000:]
    assert "interrupted" in err1 and "Traceback" not in err1
    r2, err2 = _run_killed(cmd, cut, f"SIGKILL:{k2}", model=model)
    assert r2 == -9, err2[-3000:]
    r3, err3 = _run_here(cmd, cut, model=model, figure_files=cmd not in FIGURES_RENDERED_ELSEWHERE)
    assert r3 == 0, err3[-3000:]
    kept, computed = (sum(x) for x in zip(*_counts(err3), strict=False))
    assert (kept, computed) == (k1 + k2, total - k1 - k2), (k1, k2, total, _counts(err3))
    assert _csvs(cut) == _csvs(ref) and _csvs(ref)
