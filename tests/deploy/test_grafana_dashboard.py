"""deploy/grafana/dashboard.json: valid JSON whose queries use only metrics the app exports."""

from __future__ import annotations

import json
import re

from prometheus_client import REGISTRY

import app.core.metrics  # noqa: F401  (registers the metrics)
from tests.helpers import ROOT

DASHBOARD = ROOT / "deploy" / "grafana" / "dashboard.json"


def exported_samples() -> set[str]:
    """Every sample name the app's metrics produce (counter _total, histogram _bucket...)."""
    names = set()
    for family in REGISTRY.collect():
        if family.name.startswith("realtime_"):
            names.update({family.name, family.name + "_total", family.name + "_bucket",
                          family.name + "_count", family.name + "_sum"})
    return names


def test_dashboard_queries_only_exported_metrics():
    dashboard = json.loads(DASHBOARD.read_text())
    exprs = [target["expr"] for panel in dashboard["panels"] for target in panel["targets"]]
    assert exprs
    used = {name for expr in exprs for name in re.findall(r"\brealtime_[a-z_]+", expr)}
    assert used and used <= exported_samples(), used - exported_samples()
    # every metric the app exports has a panel
    families = {f.name for f in REGISTRY.collect() if f.name.startswith("realtime_")}
    suffixes = ("", "_total", "_bucket")
    assert all(used & {family + suffix for suffix in suffixes} for family in families)
    # panels ask for the data source at import instead of naming one of the author's
    assert {panel["datasource"]["uid"] for panel in dashboard["panels"]} == {"${datasource}"}
