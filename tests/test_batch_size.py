"""The automatic batch size: one Prefect task per batch costs its worker ~0.1 s besides the files, so a
run with no --batch-size aims at about 4 batches per worker (measured on 2000 text-free CT files, 2
workers: 38.4 s with batches of 32, 33.2-33.5 s with 128-256)."""

from __future__ import annotations

import pytest
from distributed import Client, LocalCluster

from deid_core.inventory import AUTO_BATCH_MAX, AUTO_BATCH_MIN, auto_batch_size
from flows.deidentify import CohortParameters, _dask_workers


@pytest.mark.parametrize(("files", "workers", "size"), [
    (0, 2, AUTO_BATCH_MIN), (100, 2, AUTO_BATCH_MIN), (2000, 2, 250), (2000, 4, 125), (1001, 1, 251),
    (10**6, 8, AUTO_BATCH_MAX), (10**6, 2000, 125), (500, 0, AUTO_BATCH_MAX)])
def test_auto_batch_size(files: int, workers: int, size: int) -> None:
    assert auto_batch_size(files, workers) == size


def test_about_four_batches_per_worker_within_bounds() -> None:
    for files in (1, 50, 999, 2000, 12345, 10**6):
        for workers in (1, 2, 4, 16):
            size = auto_batch_size(files, workers)
            assert AUTO_BATCH_MIN <= size <= AUTO_BATCH_MAX
            if AUTO_BATCH_MIN < size < AUTO_BATCH_MAX:
                assert -(-files // size) in (4 * workers, 4 * workers - 1)


def test_batch_size_is_automatic_unless_given() -> None:
    assert CohortParameters(input_dir="i", output_dir="o").batch_size is None
    assert CohortParameters(input_dir="i", output_dir="o", batch_size=64).batch_size == 64
    with pytest.raises(ValueError, match="less than or equal to 2000"):
        CohortParameters(input_dir="i", output_dir="o", batch_size=5000)


def test_without_a_task_runner_the_default_client_counts() -> None:
    assert _dask_workers() == 1  # no client at all: the safe answer
    with LocalCluster(n_workers=3, threads_per_worker=1, processes=False, dashboard_address=None) as cluster, \
            Client(cluster):
        assert _dask_workers() == 3


def test_the_flow_counts_the_threads_of_its_task_runner() -> None:
    """Inside a flow the size comes from the threads of the cluster its DaskTaskRunner is on (prefect-dask
    does not make its client the default one: a first version asked for that and always got 1)."""
    from prefect import flow
    from prefect_dask import DaskTaskRunner

    from flows.cli import prefect_api

    with LocalCluster(n_workers=3, threads_per_worker=1, processes=False, dashboard_address=None) as cluster:
        @flow(name="threads-probe", task_runner=DaskTaskRunner(address=cluster.scheduler_address))
        def probe() -> int:
            return _dask_workers()

        with prefect_api():
            assert probe() == 3
