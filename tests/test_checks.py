"""The shared argument checks of :mod:`jaxcomp.checks`, and one caller's use of them."""

import numpy as np
import pytest

from jaxcomp.checks import is_whole


def test_is_whole_takes_python_and_numpy_integers_and_refuses_bools_and_floats():
    assert all(is_whole(v) for v in (0, 3, -2, np.int64(3), np.uint8(7), np.int32(-1)))
    assert not any(is_whole(v) for v in (True, False, np.bool_(True), 3.0, np.float32(3), "3", None, [3]))


def test_a_count_given_as_true_is_refused_where_it_is_used():
    from jaxcomp.greedy import omp

    D, y = np.eye(4, dtype=np.float32), np.ones(4, np.float32)
    assert np.count_nonzero(omp(D, y, max_iter=np.int64(2)).coef) == 2
    with pytest.raises(ValueError, match="max_iter must be a positive integer"):
        omp(D, y, max_iter=True)  # 1 to Python (and >= 1); a mistake here
