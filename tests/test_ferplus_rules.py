import numpy as np
import pytest

from udcbench.datasets.ferplus import ferplus_target


def onehot(i: int) -> np.ndarray:
    v = np.zeros(8)
    v[i] = 1.0
    return v


@pytest.mark.parametrize(
    ("votes", "expected"),
    [
        ([8, 1, 0, 1, 0, 0, 0, 0, 0, 0], onehot(0)),  # single votes removed, 8 of 8 left
        ([5, 4, 1, 0, 0, 0, 0, 0, 0, 0], onehot(0)),  # 5 > 0.5 * 9
        ([4, 4, 0, 0, 0, 0, 0, 0, 2, 0], None),  # 4 is not more than half of 10
        ([5, 5, 0, 0, 0, 0, 0, 0, 0, 0], None),  # a tie is never a majority
        ([2, 0, 0, 0, 0, 0, 0, 0, 6, 2], None),  # unknown wins
        ([0, 0, 0, 0, 0, 0, 0, 0, 1, 9], None),  # not a face
        ([1, 1, 1, 1, 1, 1, 1, 1, 1, 1], None),  # every vote is a single vote
        ([2, 0, 0, 0, 0, 0, 0, 6, 2, 0], onehot(7)),  # contempt
    ],
)
def test_majority_rule(votes, expected):
    got = ferplus_target(votes, "majority")
    if expected is None:
        assert got is None
    else:
        np.testing.assert_array_equal(got, expected)


def test_majority7_drops_contempt_only():
    assert ferplus_target([2, 0, 0, 0, 0, 0, 0, 6, 2, 0], "majority7") is None
    np.testing.assert_array_equal(ferplus_target([0, 10, 0, 0, 0, 0, 0, 0, 0, 0], "majority7"), onehot(1))


def test_probability_rule_by_hand():
    # 6 neutral + 3 happiness + 1 sad: the single sad vote goes; neutral (6) < 0.75 * 9, so happiness
    # joins; 9 >= 6.75 stops. Distribution 6/9, 3/9.
    got = ferplus_target([6, 3, 0, 1, 0, 0, 0, 0, 0, 0], "probability")
    np.testing.assert_allclose(got, [6 / 9, 3 / 9, 0, 0, 0, 0, 0, 0])
    # Three emotions at 3, 3, 2 of 10 (plus 2 unknown): top three emotions cover 8 >= 7.5.
    got = ferplus_target([3, 3, 2, 0, 0, 0, 0, 0, 2, 0], "probability")
    np.testing.assert_allclose(got, np.array([3, 3, 2, 0, 0, 0, 0, 0]) / 8)
    # unknown tied at the top with nothing before it: discarded.
    assert ferplus_target([0, 0, 0, 0, 0, 0, 0, 0, 5, 5], "probability") is None
    # unknown tied with an emotion that came first: the emotion is kept, unknown dropped, 5 of 10 is not > half.
    assert ferplus_target([5, 0, 0, 0, 0, 0, 0, 0, 5, 0], "probability") is None
    # 6 happiness then unknown 4 tied with nothing: 6 > 5 so kept as pure happiness.
    np.testing.assert_allclose(ferplus_target([0, 6, 0, 0, 0, 0, 0, 0, 4, 0], "probability"), onehot(1))


def test_bad_input():
    with pytest.raises(ValueError):
        ferplus_target([1, 2, 3], "majority")
    with pytest.raises(ValueError, match="label mode"):
        ferplus_target([5] + [0] * 9, "nonsense")
