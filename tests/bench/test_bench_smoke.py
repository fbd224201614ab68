"""`bench/run.py --quick`: the bench command still works (tiny sizes; not a timed test)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest

from tests.helpers import ROOT

pytestmark = [
    pytest.mark.skipif(shutil.which("node") is None or shutil.which("npm") is None,
                       reason="the bench needs Node.js and npm"),
]


def test_quick_bench_measures_all_four_servers():
    if not (ROOT / "bench" / "node_modules").is_dir():
        subprocess.run(["npm", "ci", "--no-audit", "--no-fund", "--silent"], cwd=ROOT / "bench",
                       check=True, timeout=300)
    result = subprocess.run([sys.executable, "bench/run.py", "--quick"], cwd=ROOT,
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    report = json.loads((ROOT / "bench" / "results" / "quick" / "results.json").read_text())
    for kind in ("node", "node-recovery", "bare", "template"):
        scenarios = report["results"][kind]
        assert scenarios["fanout"]["lost"] == 0 and scenarios["fanout"]["deliveries_per_s"] > 0
        assert scenarios["cross"]["received"] == scenarios["cross"]["expected"] or kind == "bare"
        assert scenarios["idle"]["connections"] > 0 and scenarios["storm"]["connections"] > 0
        assert scenarios["idle"]["kb_per_connection_settled"] is not None
        assert len(scenarios["fanout"]["rounds"]) == 1  # every scenario's rounds (one here)
        # the 10k-client scenario's rounds (one here), the median's figures on top, over
        # two load generator processes (each one's lag reported)
        assert [r["p99_ms"] for r in scenarios["scale"]["rounds"]] == [scenarios["scale"]["p99_ms"]]
        assert scenarios["scale"]["processes"] == 2 and (scenarios["scale"]["lost"] == 0 or kind == "bare")
        assert len(scenarios["scale"]["loadgen_lag_ms_per_process"]) == 2
    assert "template / Node + recovery" in result.stdout
    for design in ("routed", "one_channel"):  # the scale-out scenario, both designs
        rows = report["routing"][design]
        assert list(rows) == ["1", "2", "2, rooms on 1"] and all(
            r["lost"] == 0 and r["server_cpu_us_per_delivery"] > 0 for r in rows.values())
    assert "routed fan-out" in result.stdout
