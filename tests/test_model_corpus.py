"""The real-model text's token ids are fingerprinted in every result's description (``models.corpus``)."""
from __future__ import annotations

from ropetheory.models.corpus import text_tokens
from ropetheory.store import token_ids_sha256


class CharTokenizer:
    """One id per character (its code point): enough of a tokenizer for ``text_tokens``."""
    bos_token_id = 0

    def __call__(self, text, add_special_tokens=False):
        return {"input_ids": [ord(c) for c in text]}

    def convert_ids_to_tokens(self, i):
        return chr(i)


def test_the_description_carries_the_sha256_of_the_exact_ids_and_another_text_gives_another(tmp_path):
    a, b = tmp_path / "a.txt", tmp_path / "b.txt"
    a.write_text("the same words, " * 8)
    b.write_text("the same words; " * 8)
    ids_a, desc_a = text_tokens(CharTokenizer(), 40, text_file=a)
    ids_b, desc_b = text_tokens(CharTokenizer(), 40, text_file=b)
    assert desc_a["ids_sha256"] == token_ids_sha256(ids_a) and desc_b["ids_sha256"] == token_ids_sha256(ids_b)
    assert desc_a["ids_sha256"] != desc_b["ids_sha256"]
    ids_bos, desc_bos = text_tokens(CharTokenizer(), 40, text_file=a, bos=True)   # same text, other ids
    assert desc_bos["sha256"] == desc_a["sha256"] and desc_bos["ids_sha256"] != desc_a["ids_sha256"]
