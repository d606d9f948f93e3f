"""The study set (balanced, seeded), each reader's order (seeded by name) and the opaque tokens."""

from __future__ import annotations

import collections

import pytest

from monai_synth.apps.vtt import REAL, SYNTHETIC, StudyItem, balanced_counts, draw_study_set, new_token, reader_order


def pool(truth: str, n: int, labels: tuple[str, ...] | None = None) -> list[StudyItem]:
    return [StudyItem(f"/data/{truth}/{i:03d}.png", truth, None if labels is None else labels[i % len(labels)])
            for i in range(n)]  # fmt: skip


def test_balanced_real_vs_synthetic_and_seeded():
    real, syn = pool(REAL, 9), pool(SYNTHETIC, 30)
    drawn = draw_study_set(real, syn, n=12, seed=1)
    assert collections.Counter(it.truth for it in drawn) == {REAL: 6, SYNTHETIC: 6}
    assert len({it.path for it in drawn}) == 12
    assert draw_study_set(list(reversed(real)), syn[::-1], n=12, seed=1) == drawn  # input order does not matter
    assert draw_study_set(real, syn, n=12, seed=2) != drawn
    assert len(draw_study_set(real, syn, seed=0)) == 18  # default: the largest balanced set (2 x 9)
    # shuffled: not all real first
    assert [it.truth for it in drawn] != sorted(it.truth for it in drawn)


def test_balanced_per_label_with_the_same_labels_in_both_arms():
    real, syn = pool(REAL, 12, ("0", "1", "2")), pool(SYNTHETIC, 20, ("0", "1", "2"))
    drawn = draw_study_set(real, syn, n=14, seed=0)  # 7 per arm over 3 labels: 3, 2, 2 in both arms
    counts = collections.Counter((it.truth, it.label) for it in drawn)
    assert counts == {(t, lab): c for t in (REAL, SYNTHETIC) for lab, c in (("0", 3), ("1", 2), ("2", 2))}
    assert balanced_counts(real, syn, None)[(REAL, "0")] == 4  # 12 real / 3 labels
    assert len(draw_study_set(real, syn, n=24)) == 24  # the largest balanced set: 4 per label and arm


@pytest.mark.parametrize(
    "real, syn, n, match",
    [
        (pool(REAL, 4), pool(SYNTHETIC, 4), 7, "must be an even integer"),
        (pool(REAL, 4), pool(SYNTHETIC, 4), 0, "must be an even integer"),
        (pool(REAL, 4), pool(SYNTHETIC, 40), 10, "the largest balanced n is 8"),
        (pool(REAL, 4, ("a", "b")), pool(SYNTHETIC, 4, ("a",)), None, "labels differ between the arms"),
        (pool(REAL, 6, ("a", "b")), pool(SYNTHETIC, 40, ("a", "b")), 14, "real/a"),
        ([], pool(SYNTHETIC, 4), None, "needs real and synthetic images"),
    ],
    ids=["odd", "zero", "too-many", "label-missing-in-an-arm", "too-many-per-label", "no-real"],
)
def test_impossible_sets_say_why(real, syn, n, match):
    with pytest.raises(ValueError, match=match):
        draw_study_set(real, syn, n=n)


def test_reader_order_is_a_seeded_permutation_per_reader():
    order = reader_order(20, seed=5, reader_key="ann")
    assert sorted(order) == list(range(20))
    assert reader_order(20, 5, "ann") == order
    assert reader_order(20, 5, "bob") != order
    assert reader_order(20, 6, "ann") != order


def test_tokens_are_random_opaque_and_url_safe():
    tokens = {new_token() for _ in range(200)}
    assert len(tokens) == 200
    assert all(len(t) == 22 and all(c.isalnum() or c in "-_" for c in t) for t in tokens)
