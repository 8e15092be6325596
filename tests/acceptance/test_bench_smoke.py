"""``make bench``'s runner works end to end, on tiny sizes.

The benchmark itself (``python -m bench.run``, minutes long) never runs in CI; this checks that
the runner starts its database, broker processes and receiver, drives every phase, cleans up,
and ends with one JSON object on its last stdout line holding every result key.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
RESULT_KEYS = (
    "ingest_batch_resources_per_s",
    "ingest_single_requests_per_s",
    "copy_ceiling_rows_per_s",
    "delivery_per_s",
    "delivery_ceiling_per_s",
    "delivery_to_ceiling",
    "delivery_pg_cpu_us",
    "delivery_worker_cpu_to_client",
    "end_to_end_resources_per_s",
    "close_to_receipt_p99_ms",
    "events_list_p99_ms",
    "backlog_rss_mb",
    "fifo_delivery_events_per_s",
    "fifo_out_of_order",
    "rate_limited_per_s",
    "rate_limited_error",
    "rate_limited_others_ratio",
    "noisy_neighbour_p99_delta_s",
    "idle_registrations_ratio",
    "workers_scaling_3_to_1",
    "stats_7d_p99_ms",
    "stats_24h_p99_ms",
    "stats_1h_p99_ms",
)
# make bench-history's phases: --tiny runs them too.
HISTORY_KEYS = (
    "history_filters_p99_ms",
    "window_drain_resources_per_s",
    "window_drain_other_ingest_p99_ms",
    "metrics_scrape_p99_ms",
    "history_retention_drop_max_ms",
    "history_retention_size_ratio",
)


@pytest.mark.timeout(300)
def test_bench_runner_prints_every_result_as_json_on_its_last_line(
    tmp_path: Path, base_database_url: str
) -> None:
    out = tmp_path / "results.json"
    # The suite's PostgreSQL (machine or embedded): the runner makes and drops its own database.
    env = {**os.environ, "BROKER_BENCH_DATABASE_URL": base_database_url}
    run = subprocess.run(
        [sys.executable, "-m", "bench.run", "--tiny", "--out", str(out)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,  # a busy machine: every phase starts its own broker processes
    )
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-4000:]
    lines = run.stdout.strip().splitlines()
    assert len(lines) > 1, "progress lines come before the result"
    result = json.loads(lines[-1])
    for key in RESULT_KEYS + HISTORY_KEYS:
        assert isinstance(result.get(key), int | float), (key, result.get(key))
    assert result["mode"] == "tiny"
    assert set(result["targets"]) <= set(RESULT_KEYS + HISTORY_KEYS)
    assert json.loads(out.read_text()) == result
    # Every delivery the receiver checked was signed right, and nothing was lost on the way.
    details = result["details"]
    assert details["end_to_end"]["delivered_resources"] == details["end_to_end"]["resources"]
    assert details["close_to_receipt"]["missing"] == 0
    assert details["noisy_neighbour"]["with_slow"]["missing"] == 0
    assert details["idle_registrations"]["with"]["complete"]
    for phase in ("close_to_receipt", "end_to_end", "delivery", "delivery_ceiling"):
        assert details[phase]["bad_signatures"] == 0, phase
    assert details["fifo_delivery"]["complete"]
    assert result["fifo_out_of_order"] == 0


@pytest.mark.timeout(180)
def test_replay_bench_prints_its_figures_as_json_on_its_last_line(
    tmp_path: Path, base_database_url: str
) -> None:
    out = tmp_path / "replay.json"
    env = {**os.environ, "BROKER_BENCH_DATABASE_URL": base_database_url}
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "bench.replay",
            "--events",
            "300",
            "--drain-seconds",
            "30",
            "--out",
            str(out),
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=150,
    )
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-4000:]
    result = json.loads(run.stdout.strip().splitlines()[-1])
    assert json.loads(out.read_text()) == result
    assert result["replay_requeued"] == 300
    assert result["replay_drain_delivered"] == 300  # every replayed event arrived again
    assert result["other_missing"] == 0
    # (300 replay in less than one 0.25 s emit interval: "during_replay" has no sample here)
    for key in ("replay_seconds", "other_p99_lateness_s_before"):
        assert isinstance(result[key], int | float), (key, result[key])
