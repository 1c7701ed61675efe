"""The Grafana dashboard (`dashboards/hybrid-serve.json`) against the server it watches.

Why this file exists: a dashboard that queries a metric the server does not expose shows "No data"
without any error, so a renamed or misspelled metric would go unnoticed until someone needs the panel.
Here every metric name in every panel's PromQL (and in the template variables' queries) is read out
of the JSON and looked up in the `/metrics` of a real in-process server that has served real requests
on a tiny model; the dashboard is also checked for what Grafana's import needs (unique panel ids, a
grid position each, every panel and target on the `${DS_PROMETHEUS}` datasource chosen at import,
a refId per target). The small helpers below are the PromQL reading the checks share; each has a test
showing that it reports what it must.
"""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path
from typing import Any, Iterable, Iterator

import httpx
import pytest
from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families

from core.http.app import build_inprocess_app
from tests.conftest import REPO_ROOT, make_settings
from tests.live import live_server

DASHBOARD = REPO_ROOT / "dashboards" / "hybrid-serve.json"
#: What every panel and target names as its datasource: the input Grafana's import replaces.
DATASOURCE = {"type": "prometheus", "uid": "${DS_PROMETHEUS}"}
HISTOGRAM_SUFFIXES = ("_bucket", "_sum", "_count")
#: Metric families that only the container backends (Ray, Modal) fill: the in-process server declares
#: them in `/metrics` but never has a container cold start to count.
CONTAINER_ONLY = {"hybrid_cold_starts", "hybrid_cold_start_seconds"}
#: Variables Grafana itself provides to queries.
GRAFANA_VARIABLES = {"__rate_interval", "__interval", "__interval_ms", "__range", "__range_s", "__range_ms"}
GRID_COLUMNS = 24

# --- reading PromQL ---------------------------------------------------------------------------------

_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
_NAME_MATCHER = re.compile(r'__name__\s*=\s*("(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\')')
_VARIABLE = re.compile(r"\$\{[^}]*\}|\$\w+|\[\[[^\]]*\]\]")
_MATCHERS = re.compile(r"\{[^{}]*\}")
_RANGE = re.compile(r"\[[^\[\]]*\]")
_CLAUSE = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^()]*\)", re.IGNORECASE)
#: A whole identifier (not the tail of a number such as 1e3, nor a prefix of a longer name) that is not
#: called as a function.
_IDENTIFIER = re.compile(r"(?<![\w.:])[A-Za-z_:][\w:]*(?![\w:])(?!\s*\()")
_KEYWORDS = {"and", "or", "unless", "by", "without", "on", "ignoring", "group_left", "group_right", "bool",
             "offset", "atan2", "inf", "nan", "start", "end"}


def promql_metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression selects, as written (`x_bucket` stays `x_bucket`): functions,
    aggregations and their `by (...)` / `without (...)` clauses, vector-matching clauses, label matchers,
    ranges and subqueries (`[5m]`, `[1h:5m]`), `offset`, numbers, strings and dashboard variables
    (`$experiment`, `${var}`, `[[var]]`) are left out; a `{__name__="x"}` selector gives `x`."""
    names = {json.loads(m) if m.startswith('"') else m[1:-1] for m in _NAME_MATCHER.findall(expr)}
    text = _STRING.sub('""', expr)
    text = _VARIABLE.sub(" ", text)
    text = _MATCHERS.sub(" ", text)
    text = _RANGE.sub(" ", text)
    text = _CLAUSE.sub(" ", text)
    names |= {name for name in _IDENTIFIER.findall(text) if name.lower() not in _KEYWORDS}
    return names


def variable_query_metric_names(query: str) -> set[str]:
    """The metric names a Prometheus template variable's query selects: `label_values(selector, label)` and
    `query_result(expr)` read their PromQL; `label_values(label)`, `label_names()` and `metrics(...)` select
    none."""
    label_values = re.fullmatch(r"\s*label_values\((.*)\)\s*", query, re.DOTALL)
    if label_values:
        selector, comma, _label = label_values.group(1).rpartition(",")
        return promql_metric_names(selector) if comma else set()
    query_result = re.fullmatch(r"\s*query_result\((.*)\)\s*", query, re.DOTALL)
    if query_result:
        return promql_metric_names(query_result.group(1))
    return set()


def base_name(name: str) -> str:
    """A series name's metric family in the exposition: without `_total` or a histogram's suffixes."""
    for suffix in ("_total", *HISTOGRAM_SUFFIXES):
        if name.endswith(suffix):
            return name.removesuffix(suffix)
    return name


# --- reading the dashboard ------------------------------------------------------------------------------

def load_dashboard(path: Path = DASHBOARD) -> dict[str, Any]:
    return json.loads(path.read_text(encoding="utf-8"))


def all_panels(dashboard: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Every panel, rows included, and the panels a collapsed row holds."""
    for panel in dashboard.get("panels", []):
        yield panel
        yield from panel.get("panels", [])


def variable_query(variable: dict[str, Any]) -> str:
    query = variable.get("query", "")
    return query.get("query", "") if isinstance(query, dict) else str(query)


def dashboard_metric_names(dashboard: dict[str, Any]) -> dict[str, set[str]]:
    """Each metric name the dashboard queries → where (panel titles, template variables)."""
    found: dict[str, set[str]] = {}
    for panel in all_panels(dashboard):
        for target in panel.get("targets", []):
            for name in promql_metric_names(target.get("expr", "")):
                found.setdefault(name, set()).add(f"panel {panel.get('title')!r}")
    for variable in dashboard.get("templating", {}).get("list", []):
        if variable.get("type") == "query":
            for name in variable_query_metric_names(variable_query(variable)):
                found.setdefault(name, set()).add(f"variable ${variable.get('name')}")
    return found


def exposed_names(families: Iterable[Metric]) -> set[str]:
    """Every series name an exposition serves or declares: the samples it holds, and for a family declared
    with no sample yet (a labelled metric no request has touched), the names its type gives its series."""
    names: set[str] = set()
    for family in families:
        names |= {sample.name for sample in family.samples}
        if family.type == "counter":
            names.add(f"{family.name}_total")
        elif family.type == "histogram":
            names |= {family.name + suffix for suffix in HISTOGRAM_SUFFIXES}
        elif family.type == "summary":
            names |= {family.name, f"{family.name}_sum", f"{family.name}_count"}
        else:
            names.add(family.name)
    return names


def missing_metrics(queried: Iterable[str], families: Iterable[Metric]) -> list[str]:
    """The queried names that the exposition neither serves nor declares, sorted."""
    return sorted(set(queried) - exposed_names(families))


def dashboard_problems(dashboard: dict[str, Any]) -> list[str]:
    """What would keep Grafana's import from giving a working dashboard; empty when there is nothing."""
    problems: list[str] = []
    inputs = {i.get("name"): i for i in dashboard.get("__inputs", [])}
    ds_input = inputs.get("DS_PROMETHEUS", {})
    if (ds_input.get("type"), ds_input.get("pluginId")) != ("datasource", "prometheus"):
        problems.append("__inputs has no DS_PROMETHEUS datasource input of the prometheus plugin")
    for key in ("title", "uid", "schemaVersion"):
        if not dashboard.get(key):
            problems.append(f"the dashboard has no {key}")
    variables = {v.get("name"): v for v in dashboard.get("templating", {}).get("list", [])}
    defined = set(variables) | GRAFANA_VARIABLES | {"DS_PROMETHEUS"}
    experiment = variables.get("experiment")
    if experiment is None:
        problems.append("no $experiment template variable")
    else:
        if experiment.get("datasource") != DATASOURCE:
            problems.append(f"$experiment's datasource is {experiment.get('datasource')!r}, not {DATASOURCE!r}")
        if not variable_query(experiment).strip().startswith("label_values("):
            problems.append("$experiment is not read with label_values(...)")
    ids: dict[Any, str] = {}
    placed: list[tuple[str, dict[str, int]]] = []
    for panel in all_panels(dashboard):
        title = repr(panel.get("title"))
        panel_id = panel.get("id")
        if not isinstance(panel_id, int):
            problems.append(f"panel {title} has no integer id")
        elif panel_id in ids:
            problems.append(f"panel id {panel_id} is used by {ids[panel_id]} and {title}")
        else:
            ids[panel_id] = title
        grid = panel.get("gridPos")
        if not isinstance(grid, dict) or not all(isinstance(grid.get(k), int) for k in "hwxy"):
            problems.append(f"panel {title} has no gridPos with integer h, w, x, y")
        elif grid["w"] < 1 or grid["h"] < 1 or grid["x"] < 0 or grid["y"] < 0 or grid["x"] + grid["w"] > GRID_COLUMNS:
            problems.append(f"panel {title}'s gridPos {grid} is off the {GRID_COLUMNS}-column grid")
        else:
            placed.append((title, grid))
        if panel.get("type") == "row":
            continue
        if panel.get("datasource") != DATASOURCE:
            problems.append(f"panel {title}'s datasource is {panel.get('datasource')!r}, not {DATASOURCE!r}")
        targets = panel.get("targets") or []
        if not targets:
            problems.append(f"panel {title} has no targets")
        ref_ids = [t.get("refId") for t in targets]
        if not all(ref_ids) or len(set(ref_ids)) != len(ref_ids):
            problems.append(f"panel {title}'s targets need a distinct refId each, have {ref_ids}")
        for target in targets:
            expr = target.get("expr")
            if not isinstance(expr, str) or not expr.strip():
                problems.append(f"panel {title} target {target.get('refId')} has no expr")
                continue
            if target.get("datasource", DATASOURCE) != DATASOURCE:
                problems.append(f"panel {title} target {target.get('refId')}'s datasource is not {DATASOURCE!r}")
            for op in re.findall(r'(=~|!~|!=|=)\s*"\$\{?experiment\}?"', expr):
                if op not in ("=~", "!~"):  # a multi-value or All selection is a regex
                    problems.append(f"panel {title} matches $experiment with {op}, which needs =~")
            for used in sorted(set(re.findall(r"\$\{?(\w+)", expr))):
                if used not in defined and not used.isdigit():  # $1: a label_replace group
                    problems.append(f"panel {title} uses ${used}, which no variable defines")
    for i, (title, a) in enumerate(placed):
        for other, b in placed[i + 1:]:
            across = a["x"] < b["x"] + b["w"] and b["x"] < a["x"] + a["w"]
            down = a["y"] < b["y"] + b["h"] and b["y"] < a["y"] + a["h"]
            if across and down:
                problems.append(f"panels {title} and {other} overlap")
    return problems


# --- the reading itself -----------------------------------------------------------------------------------

@pytest.mark.parametrize(("expr", "names"), [
    ('histogram_quantile(0.99, sum by (le, experiment) (rate(hybrid_request_latency_secondz_bucket'
     '{experiment=~"$experiment", status!~"2.."}[$__rate_interval]))) / on(experiment) group_left '
     'sum without (status) (rate(hybrid_requests_total[5m] offset 1h)) > bool 1e3',
     {"hybrid_request_latency_secondz_bucket", "hybrid_requests_total"}),
    ('sum(rate({__name__="hybrid_requests_total", experiment=~"${experiment}"}[5m]))', {"hybrid_requests_total"}),
    ('label_replace(up{job="x"}, "dst", "$1", "src", "(.*)") and on (instance) node:cpu:rate5m offset -5m',
     {"up", "node:cpu:rate5m"}),
    ("topk($n, max_over_time(hybrid_replicas[1h:5m])) unless [[legacy]]", {"hybrid_replicas"}),
    ("1 - 2e-3 * scalar(hybrid_cached_models) > bool Inf or vector(0)", {"hybrid_cached_models"}),
    ("sum(hybrid_cold_starts_total) by (experiment) / sum(hybrid_cold_loads_total) without (status)",
     {"hybrid_cold_starts_total", "hybrid_cold_loads_total"}),
])
def test_promql_metric_names_finds_the_selected_metrics_only(expr: str, names: set[str]) -> None:
    assert promql_metric_names(expr) == names


def test_variable_queries_name_their_selectors_metrics() -> None:
    assert variable_query_metric_names('label_values(hybrid_requests_total{status="200"}, experiment)') == \
        {"hybrid_requests_total"}
    assert variable_query_metric_names("label_values(experiment)") == set()
    assert variable_query_metric_names("query_result(topk(3, sum by (experiment) (hybrid_replicas)))") == \
        {"hybrid_replicas"}
    assert base_name("hybrid_cold_start_seconds_bucket") == "hybrid_cold_start_seconds"
    assert base_name("hybrid_requests_total") == "hybrid_requests"


def test_a_misspelled_or_wrongly_suffixed_metric_is_reported() -> None:
    exposition = (
        "# TYPE hybrid_requests_total counter\n"
        'hybrid_requests_total{experiment="fe",status="200"} 2.0\n'
        "# TYPE hybrid_request_latency_seconds histogram\n"
        "# TYPE hybrid_replicas gauge\n"
    )
    families = list(text_string_to_metric_families(exposition))
    queried = {"hybrid_requests_total", "hybrid_request_latency_seconds_bucket", "hybrid_replicas",
               "hybrid_request_latency_secondz_count", "hybrid_requests", "hybrid_requests_bucket",
               "hybrid_replicas_total"}
    assert missing_metrics(queried, families) == ["hybrid_replicas_total", "hybrid_request_latency_secondz_count",
                                                  "hybrid_requests", "hybrid_requests_bucket"]


# --- the dashboard ----------------------------------------------------------------------------------------

def test_the_dashboard_is_valid_for_grafanas_import() -> None:
    dashboard = load_dashboard()
    assert dashboard_problems(dashboard) == []
    panels = [p for p in all_panels(dashboard) if p.get("type") != "row"]
    assert len(panels) >= 10 and all(p.get("targets") for p in panels)


def test_the_validity_check_reports_a_broken_dashboard() -> None:
    dashboard = load_dashboard()
    broken = copy.deepcopy(dashboard)
    panels = [p for p in all_panels(broken) if p.get("type") != "row"]
    first, second, third = panels[:3]
    second["id"] = first["id"]
    del third["targets"][0]["refId"]
    panels[3]["datasource"] = {"type": "prometheus", "uid": "some-fixed-uid"}
    del panels[4]["gridPos"]
    second["targets"][0]["expr"] = second["targets"][0]["expr"].replace("$__rate_interval", "$window")
    panels[6]["gridPos"] = dict(panels[7]["gridPos"])
    panels[8]["targets"][0]["expr"] = panels[8]["targets"][0]["expr"].replace('=~"$experiment"', '="$experiment"')
    problems = dashboard_problems(broken)
    expected = [f"panel id {first['id']} is used by", f"panel {third['title']!r}'s targets need a distinct refId",
                f"panel {panels[3]['title']!r}'s datasource is", f"panel {panels[4]['title']!r} has no gridPos",
                f"panel {second['title']!r} uses $window",
                f"panels {panels[6]['title']!r} and {panels[7]['title']!r} overlap",
                f"panel {panels[8]['title']!r} matches $experiment with ="]
    for fragment in expected:
        assert any(p.startswith(fragment) for p in problems), (fragment, problems)


def test_every_metric_the_dashboard_queries_is_served(registry_file: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    dashboard = load_dashboard()
    queried = dashboard_metric_names(dashboard)
    assert {"hybrid_requests_total", "hybrid_request_latency_seconds_bucket", "hybrid_container_cost_usd_total"} \
        <= set(queried), sorted(queried)

    with live_server(build_inprocess_app(make_settings(registry_path=registry_file))) as url, \
            httpx.Client(base_url=url, timeout=60) as http:
        assert http.post("/predict/fe", json={"inputs": "hello"}).status_code == 200  # its model's load
        assert http.post("/predict/fe", json={"inputs": ["warm", "now"]}).status_code == 200
        assert http.post("/predict/fe", json={"inputs": 5}).status_code >= 400  # an error status too
        response = http.get("/metrics")
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/plain")
    families = list(text_string_to_metric_families(response.text))

    missing = missing_metrics(queried, families)
    assert not missing, "the dashboard queries metrics that /metrics does not expose: " + "; ".join(
        f"{name} (in {', '.join(sorted(queried[name]))})" for name in missing)

    # After real requests every series the in-process server can fill holds samples; only the container
    # backends' cold starts stay declared and empty here.
    sampled = {sample.name for family in families for sample in family.samples}
    unsampled = {name for name in queried if name not in sampled}
    assert {base_name(name) for name in unsampled} <= CONTAINER_ONLY, sorted(unsampled)

    # The check can fail: the same pipeline over a dashboard with one misspelled metric names it.
    text = json.dumps(dashboard).replace("hybrid_cold_loads_total", "hybrid_cold_load_total")
    assert missing_metrics(dashboard_metric_names(json.loads(text)), families) == ["hybrid_cold_load_total"]
