"""search.runner pieces that need no Ray: what a search says when its tracking server dies."""

from __future__ import annotations

import pytest

from search.runner import SearchOptions, _fit
from search.tracking import TrackingServerDown


class _DyingTuner:
    def fit(self):
        raise TrackingServerDown("MLflow tracking server http://127.0.0.1:5001 stopped answering during the search "
                                 "(cause: ConnectionRefusedError: [Errno 111] Connection refused)")


@pytest.mark.parametrize("storage, where", [(None, ""), ("s3://bucket/searches", " --storage s3://bucket/searches")])
def test_tracking_server_down_message_says_how_to_resume(storage, where):
    with pytest.raises(TrackingServerDown) as ei:
        _fit(_DyingTuner(), "mysearch", SearchOptions(storage=storage), "/x/ray_results/mysearch")
    msg = str(ei.value)
    assert msg.startswith("MLflow tracking server http://127.0.0.1:5001 stopped answering during the search; start it "
                          f"again, then run `blemore resume mysearch{where}`")
    assert msg.endswith("(cause: ConnectionRefusedError: [Errno 111] Connection refused)")
    assert len(msg) < 500  # the CLI prints the first 500 characters of a runtime error
