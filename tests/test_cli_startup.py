"""The CLI starts the ephemeral Prefect API and a warmed LocalCluster side by side (flows/cli.py)."""

from __future__ import annotations

import os

import pytest

from flows.cli import prefect_api


def _worker_state() -> tuple[str, bool, bool]:
    """In a worker: the API it reports to, and whether Tesseract and Presidio are already loaded."""
    from deid_core.pixels import ocr
    from deid_core.presidio_offline import get_analyzer

    return (os.environ.get("PREFECT_API_URL", ""), "tesseract" in ocr._ENGINES,
            get_analyzer.cache_info().currsize == 1)


@pytest.mark.slow
def test_api_and_warm_cluster_start_together_and_stop_together() -> None:
    from distributed import Client

    assert not os.environ.get("PREFECT_API_URL")
    with prefect_api(workers=2) as address:
        api = os.environ["PREFECT_API_URL"]
        assert address and address.startswith("tcp://127.0.0.1:")
        with Client(address) as client:
            states = client.run(_worker_state)
        assert len(states) == 2
        # every worker reports to this run's API and loaded its engines before the first file
        assert set(states.values()) == {(api, True, True)}
        import httpx

        assert httpx.get(f"{api}/health", timeout=5).status_code == 200
    assert not os.environ.get("PREFECT_API_URL")
    with pytest.raises(OSError), Client(address, timeout="2s"):
        pass  # the cluster is gone with the API


def test_no_local_cluster_without_workers() -> None:
    """An external cluster (--dask-address) or a bare API: nothing is started beside it."""
    os.environ["PREFECT_API_URL"] = "http://127.0.0.1:9/api"  # an API the caller manages
    try:
        with prefect_api(workers=None) as address:
            assert address is None
    finally:
        os.environ.pop("PREFECT_API_URL", None)
