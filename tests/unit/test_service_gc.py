"""A service process tunes the garbage collector once start-up is over (shared.service.settle_heap),
and its /metrics show what collection costs."""

import asyncio
import gc
import socket
from contextlib import asynccontextmanager

import pytest
import uvicorn
from fastapi import FastAPI
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from services.scoring.settings import ScoringSettings
from shared.observability import ServiceMetrics
from shared.service import _Server, settle_heap


@pytest.fixture
def restored_gc():
    thresholds = gc.get_threshold()
    yield
    gc.unfreeze()
    gc.set_threshold(*thresholds)


def test_settle_heap_freezes_start_up_and_raises_the_young_threshold(monkeypatch, restored_gc):
    monkeypatch.setenv("HUITOU_GC_YOUNG_THRESHOLD", "20000")
    gc.unfreeze()
    long_lived = [object() for _ in range(10)]  # noqa: F841 — alive during the freeze
    settle_heap(ScoringSettings())
    assert gc.get_threshold()[0] == 20000
    assert gc.get_freeze_count() > 0


def test_freezing_can_be_turned_off_and_the_threshold_is_bounded(monkeypatch, restored_gc):
    gc.unfreeze()
    monkeypatch.setenv("HUITOU_GC_FREEZE", "false")
    settle_heap(ScoringSettings())
    assert gc.get_freeze_count() == 0
    assert gc.get_threshold()[0] == 50_000  # the default
    monkeypatch.setenv("HUITOU_GC_YOUNG_THRESHOLD", "10")  # collections after every few allocations
    with pytest.raises(ValueError, match="HUITOU_GC_YOUNG_THRESHOLD"):
        ScoringSettings()


async def test_the_server_settles_the_heap_after_its_lifespan_started(monkeypatch, restored_gc):
    monkeypatch.setenv("HUITOU_GC_YOUNG_THRESHOLD", "30000")
    gc.unfreeze()
    gc.set_threshold(700, 10, 10)
    seen_in_lifespan: list[int] = []

    @asynccontextmanager
    async def lifespan(_app: FastAPI):
        seen_in_lifespan.append(gc.get_threshold()[0])  # start-up runs under the defaults
        yield

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    config = uvicorn.Config(FastAPI(lifespan=lifespan), host="127.0.0.1", port=port, log_config=None, lifespan="on")
    server = _Server(config, ScoringSettings())
    serving = asyncio.create_task(server.serve())
    for _ in range(200):
        if server.started:
            break
        await asyncio.sleep(0.02)
    assert server.started
    assert seen_in_lifespan == [700]
    assert gc.get_threshold()[0] == 30000 and gc.get_freeze_count() > 0
    server.should_exit = True
    await asyncio.wait_for(serving, 10)


def test_metrics_show_what_collection_costs():
    metrics = ServiceMetrics()
    before = _samples(metrics)
    garbage = [[n] for n in range(50_000)]
    del garbage
    gc.collect()  # a full pass, timed
    after = _samples(metrics)
    assert after["huitou_gc_pause_seconds_total", "2"] > before["huitou_gc_pause_seconds_total", "2"]
    assert after["python_gc_collections_total", "2"] > before["python_gc_collections_total", "2"]
    assert after["huitou_python_allocated_blocks", ""] > 0
    assert after["process_resident_memory_bytes", ""] > 0


def _samples(metrics: ServiceMetrics) -> dict[tuple[str, str], float]:
    return {
        (sample.name, sample.labels.get("generation", "")): sample.value
        for family in text_string_to_metric_families(generate_latest(metrics.registry).decode())
        for sample in family.samples
    }
