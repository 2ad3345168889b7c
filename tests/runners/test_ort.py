"""``deployinc.runners.ort``: the session ORT actually built runs with the thread count asked for."""

from __future__ import annotations

import pytest

from deployinc.runners.ort import OrtRunner, session_options
from tests.runners.test_runners import _relu_model


@pytest.mark.parametrize("threads", [1, 3])
def test_the_sessions_own_thread_count_is_threads(threads):
    """Read back from the session's options (what ORT runs with), not from deployinc's record of what it asked."""
    with OrtRunner(_relu_model(), "cpu", threads=threads) as r:
        so = r.session.get_session_options()
        assert so.intra_op_num_threads == threads and so.inter_op_num_threads == 1
        assert r.describe()["threads"] == threads


def test_no_thread_count_leaves_ort_its_default():
    so = session_options(None)
    assert so.intra_op_num_threads == 0  # 0: ORT chooses (one per physical core)
    assert session_options(2).intra_op_num_threads == 2
