"""The real-model claims speak the package's one verdict vocabulary, with how a verdict holds or fails in a
separate qualifier (``ropetheory.models.claims``)."""
from __future__ import annotations

import pytest

from ropetheory.core.verdicts import Verdict
from ropetheory.models.claims import NEAR_ZERO, claims


def analysis(kq_pre: float, kq_post: float, n: int = 64, L: int = 16) -> dict:
    """A saved analysis of 3 heads on the grid (8, 16, 32, 64) whose key-query cosines are the given ones."""
    grid = [8, 16, 32, 64]
    head = {"cos_kk_pre": [0.9] * 4, "cos_qq_pre": [0.9] * 4, "cos_kq_pre": [kq_pre] * 4,
            "cos_kq_post": [kq_post] * 4, "pc1_var": 0.8, "rho_measured": [1.0, 0.9, 0.5, 0.2],
            "sink_key_norm_ratio": 0.5, "window": None, "sink_rope": [0.9, 0.9, 0.1, 0.0],
            "sink_norope": [0.9, 0.9, 0.9, 0.9]}
    return {"grid": grid, "train_len": L, "n": n, "heads": [dict(head) for _ in range(3)]}


def by_claim(rows: list[dict], start: str) -> dict:
    (row,) = [r for r in rows if r["claim"].startswith(start)]
    return row


def test_every_verdict_is_a_word_of_the_one_vocabulary_and_the_qualifier_is_apart():
    for res in (analysis(-0.2, -0.4), analysis(0.001, -0.01), analysis(0.3, 0.4), analysis(0.1, 0.2, n=16)):
        for row in claims(res):
            assert isinstance(row["verdict"], Verdict) and isinstance(row["qualifier"], str)
            assert set(row) == {"claim", "number", "verdict", "qualifier"}


@pytest.mark.parametrize(("kq_pre", "verdict", "qualifier"), [
    (-0.2, Verdict.HOLDS, ""),
    (NEAR_ZERO / 2, Verdict.DOES_NOT_HOLD, "near zero, not opposed"),
    (0.3, Verdict.DOES_NOT_HOLD, ""),
])
def test_a_near_zero_key_query_cosine_does_not_hold_and_says_near_zero(kq_pre, verdict, qualifier):
    row = by_claim(claims(analysis(kq_pre, kq_pre)), "opposed clusters before RoPE")
    assert (row["verdict"], row["qualifier"]) == (verdict, qualifier)


def test_lower_after_rope_but_not_opposed_is_partly_with_its_reason():
    row = by_claim(claims(analysis(0.3, 0.2)), "more opposed after RoPE")
    assert (row["verdict"], row["qualifier"]) == (Verdict.PARTLY, "lower after RoPE, not opposed")


def test_claims_past_L_on_a_text_no_longer_than_L_are_not_tested_and_say_why():
    rows = claims(analysis(-0.2, -0.4, n=16, L=16))
    for start in ("RoPE lowers the FSV", "the sink share collapses"):
        row = by_claim(rows, start)
        assert row["verdict"] is Verdict.NOT_TESTED and "n <= L" in row["qualifier"]


def test_the_readme_states_the_committed_key_query_cosines():
    """The README's cluster row quotes the numbers the committed claims.csv files hold (before and after RoPE)."""
    import csv
    import pathlib
    root = pathlib.Path(__file__).resolve().parents[1]
    row = next(line for line in (root / "README.md").read_text().splitlines()
               if line.startswith("| real models: tight, opposed key/query clusters"))
    for model in ("smollm2-135m", "gemma3-270m"):
        with open(root / "docs" / "figures" / "models" / model / "claims.csv") as fh:
            claims = {r["claim"].split(":")[0]: r for r in csv.DictReader(fh)}
        after = claims["more opposed after RoPE"]["number"]
        before, post = after.split(" before -> ")[0].split()[-1], after.split(" -> ")[1].split()[0]
        for number in (before, post):
            assert number.replace("-", "−") in row, (model, number)
