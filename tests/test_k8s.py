"""Offline checks of the Kubernetes files: schemas, the overlay, the alert rules, and the
StatefulSet's own environment run locally as a cluster of processes."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from config.settings import unknown_variables
from tests.processes import ROOT, file_env, lake_candles, run_flow_processes, start_flow_process
from tools.broker import free_port

K8S = ROOT / "k8s"
BASE = K8S / "base"
CUSTOM_KINDS = {"PodMonitor", "PrometheusRule"}


def documents(path: Path) -> list[dict]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def base_resources() -> list[dict]:
    kustomization = yaml.safe_load((BASE / "kustomization.yaml").read_text())
    return [doc for name in kustomization["resources"] for doc in documents(BASE / name)]


def render(overlay: Path) -> list[dict]:
    """What `kubectl kustomize` (offline; Debian's `kubectl`, installed by `.ci/run`) makes
    of a kustomization."""
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl (Debian: kubectl) is not installed; .ci/run installs it")
    out = subprocess.run([kubectl, "kustomize", str(overlay)], capture_output=True, check=True)
    return [d for d in yaml.safe_load_all(out.stdout) if d]


def _containers(doc: dict) -> list[dict]:
    pod = doc.get("spec", {}).get("template", {}).get("spec", {})
    return pod.get("initContainers", []) + pod.get("containers", [])


def validate(docs: list[dict], tmp_path: Path) -> subprocess.CompletedProcess[str]:
    core = [d for d in docs if d["kind"] not in CUSTOM_KINDS]
    target = tmp_path / "manifests.yaml"
    target.write_text(yaml.safe_dump_all(core))
    command = [sys.executable, "-m", "kubernetes_validate", "--strict", str(target)]
    return subprocess.run(command, capture_output=True, text=True)


def test_every_core_manifest_validates_strictly(tmp_path):
    pytest.importorskip("kubernetes_validate")
    result = validate(base_resources(), tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    core = [d for d in base_resources() if d["kind"] not in CUSTOM_KINDS]
    assert result.stdout.count("passed") == len(core) >= 7


def test_the_statefulset_is_hardened_and_wired_like_the_bytewax_chart():
    docs = {(d["kind"], d["metadata"]["name"]): d for d in base_resources()}
    sts = docs[("StatefulSet", "candlewax")]["spec"]
    pod = sts["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] and pod["securityContext"]["runAsUser"] != 0
    for container in _containers(docs[("StatefulSet", "candlewax")]):
        assert container["securityContext"]["readOnlyRootFilesystem"]
        assert container["securityContext"]["allowPrivilegeEscalation"] is False
        assert container["resources"]["requests"] and container["resources"]["limits"]
    main = pod["containers"][0]
    env = {e["name"]: e for e in main["env"]}
    assert env["BYTEWAX_POD_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
    assert env["BYTEWAX_STATEFULSET_NAME"]["value"] == "candlewax"
    assert env["BYTEWAX_HOSTFILE_PATH"]["value"] == "/etc/bytewax/hostfile.txt"
    assert sts["volumeClaimTemplates"][0]["metadata"]["name"] == "recovery"
    service = docs[("Service", "candlewax")]["spec"]
    assert service["clusterIP"] == "None" and {"process", "metrics"} <= {
        p["name"] for p in service["ports"]
    }
    settings = docs[("ConfigMap", "candlewax-settings")]["data"]
    assert settings["BYTEWAX_REPLICAS"] == str(sts["replicas"])
    monitor = docs[("PodMonitor", "candlewax")]["spec"]
    assert (
        monitor["selector"]["matchLabels"].items() <= sts["template"]["metadata"]["labels"].items()
    )
    assert monitor["podMetricsEndpoints"][0]["port"] == "metrics"


def test_the_base_renders_to_exactly_its_resources():
    rendered = {(d["kind"], d["metadata"]["name"]) for d in render(BASE)}
    generated = {("ConfigMap", "candlewax-grafana-dashboard")}
    assert rendered == {(d["kind"], d["metadata"]["name"]) for d in base_resources()} | generated


# --- the Grafana dashboard ------------------------------------------------------------------
DASHBOARD = BASE / "grafana" / "candlewax-dashboard.json"
# Grafana's own variables, as a query over the last hour would have them.
GRAFANA_VARIABLES = {"$__rate_interval": "1m", "$__range": "1h", "$pod": ".*"}
PROMQL_WORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "and", "or"}
PROMQL_WORDS |= {"unless", "bool", "offset", "le", "inf", "nan"}


def dashboard_queries() -> list[str]:
    panels = json.loads(DASHBOARD.read_text())["panels"]
    queries = [t["expr"] for p in panels for t in p.get("targets", [])]
    for name, value in GRAFANA_VARIABLES.items():
        queries = [q.replace(name, value) for q in queries]
    return queries


def metric_names(query: str) -> set[str]:
    """The metric names a PromQL query selects: strings, label matchers, ranges, grouping
    label lists and numbers taken out; identifiers followed by `(` are functions or
    aggregations, and keywords are keywords."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"', '""', query)
    text = re.sub(r"\{[^}]*\}", " ", text)
    text = re.sub(r"\[[^\]]*\]", " ", text)
    text = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", text)
    text = re.sub(r"(?<![A-Za-z0-9_:])\d[\w.]*", " ", text)  # numbers, durations (5m)
    names = set()
    for match in re.finditer(r"[A-Za-z_:][A-Za-z0-9_:]*", text):
        following = text[match.end() :].lstrip()[:1]
        if following != "(" and match.group() not in PROMQL_WORDS:
            names.add(match.group())
    return names


def exported_names(exposition: str) -> set[str]:
    """Every sample name the families of a /metrics page can have (a labelled family with
    no children yet still shows its HELP and TYPE)."""
    suffixes = {
        "counter": ("_total", "_created"),
        "gauge": ("",),
        "histogram": ("_bucket", "_count", "_sum", "_created"),
        "summary": ("", "_count", "_sum", "_created"),
    }
    return {
        family.name + suffix
        for family in text_string_to_metric_families(exposition)
        for suffix in suffixes.get(family.type, ("",))
    }


def test_the_dashboard_is_provisioned_by_the_base_for_grafanas_sidecar():
    (config,) = [d for d in render(BASE) if d["metadata"]["name"] == "candlewax-grafana-dashboard"]
    assert config["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert json.loads(config["data"]["candlewax.json"]) == json.loads(DASHBOARD.read_text())


def test_the_metric_name_reader_sees_through_promql():
    query = (
        'histogram_quantile(0.99, sum by (le, resolution) (rate(a_bucket{pod=~"x{1}"}[1m])))'
        " / on (pod) group_left sum without (le) (b_total offset 5m) > bool 0 and c"
    )
    assert metric_names(query) == {"a_bucket", "b_total", "c"}


@pytest.mark.skipif(
    shutil.which("promtool") is None, reason="promtool (Debian: prometheus) is not installed"
)
def test_every_dashboard_query_is_valid_promql_over_metrics_the_flow_exports(tmp_path):
    queries = dashboard_queries()
    assert len(queries) >= 20
    rules = {"groups": [{"name": "dashboard", "rules": []}]}
    for i, query in enumerate(queries):
        rules["groups"][0]["rules"].append({"record": f"dashboard:query_{i}", "expr": query})
    (tmp_path / "queries.yaml").write_text(yaml.safe_dump(rules))
    check = subprocess.run(
        ["promtool", "check", "rules", str(tmp_path / "queries.yaml")],
        capture_output=True,
        text=True,
    )
    assert check.returncode == 0, check.stdout + check.stderr

    # What a running flow (trades and quotes, Kafka source metrics included) serves.
    port = free_port()
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("CANDLEWAX_")},
        "PYTHONPATH": str(ROOT),
        "CANDLEWAX_SOURCE": "simulator",
        "CANDLEWAX_QUOTES_SOURCE": "simulator",
        "CANDLEWAX_SIM_TRADES": "0",
        "CANDLEWAX_SIM_SPEED": "1",
        "CANDLEWAX_METRICS_PORT": str(port),
        "CANDLEWAX_LAKE_DIR": str(tmp_path / "lake"),
    }
    flow = start_flow_process(env)
    try:
        exposition = ""
        deadline = time.monotonic() + 60
        while "candlewax_candles_emitted_total" not in exposition:
            assert flow.poll() is None and time.monotonic() < deadline, "no /metrics"
            time.sleep(0.5)
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics") as page:
                    exposition = page.read().decode()
            except OSError:
                continue
    finally:
        flow.terminate()
        flow.wait(30)
    exported = exported_names(exposition)
    used = set().union(*(metric_names(q) for q in queries))
    assert used - exported == set(), "queries of metrics the flow does not export"
    assert {"candlewax_kafka_consumer_lag", "process_resident_memory_bytes"} <= used


def test_every_candlewax_variable_the_manifests_set_is_known():
    env: dict[str, str] = {}
    for doc in render(BASE) + render(K8S / "overlays" / "production"):
        if doc["kind"] == "ConfigMap":
            env.update(doc["data"])
        if doc["kind"] == "Secret":  # the credentials, serving stores' included
            env.update(doc["stringData"])
        for container in _containers(doc):
            env.update({e["name"]: e.get("value", "") for e in container.get("env", [])})
    assert any(name.startswith("CANDLEWAX_") for name in env)
    assert {"CANDLEWAX_POSTGRES_DSN", "CANDLEWAX_REDIS_URL"} <= set(env)
    assert unknown_variables(env) == []
    (flow,) = [c for d in render(BASE) for c in _containers(d) if c["name"] == "dataflow"]
    secrets = {s["secretRef"]["name"] for s in flow["envFrom"] if "secretRef" in s}
    assert {"candlewax-kafka-credentials", "candlewax-serving-credentials"} <= secrets


def test_the_overlay_renders_to_valid_consistent_manifests(tmp_path):
    pytest.importorskip("kubernetes_validate")
    docs = render(K8S / "overlays" / "production")
    result = validate(docs, tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    by_kind = {d["kind"]: d for d in docs}
    assert {d["metadata"]["namespace"] for d in docs} == {"market-data"}
    assert by_kind["StatefulSet"]["spec"]["replicas"] == 4
    assert by_kind["ConfigMap"]["data"]["BYTEWAX_REPLICAS"] == "4"
    assert by_kind["ConfigMap"]["data"]["CANDLEWAX_LAKE_DIR"] == "/var/lake", "base settings kept"
    assert all(
        c["image"] == "registry.example.com/candlewax:0.1.0"
        for c in _containers(by_kind["StatefulSet"])
    )
    # `labels:` reach every resource and, as kustomize does, the pod template and selector.
    assert all(d["metadata"]["labels"]["app.kubernetes.io/instance"] == "production" for d in docs)
    sts = by_kind["StatefulSet"]["spec"]
    assert sts["template"]["metadata"]["labels"]["app.kubernetes.io/instance"] == "production"
    assert sts["selector"]["matchLabels"]["app.kubernetes.io/instance"] == "production"


@pytest.mark.skipif(
    shutil.which("promtool") is None, reason="promtool (Debian: prometheus) is not installed"
)
def test_alert_rules_pass_promtool_check_and_unit_tests(tmp_path):
    rule = next(d for d in base_resources() if d["kind"] == "PrometheusRule")
    (tmp_path / "rules.yaml").write_text(yaml.safe_dump({"groups": rule["spec"]["groups"]}))
    shutil.copy(K8S / "prometheus" / "rules.test.yaml", tmp_path)
    check = subprocess.run(
        ["promtool", "check", "rules", str(tmp_path / "rules.yaml")], capture_output=True, text=True
    )
    assert check.returncode == 0 and "SUCCESS: 5 rules found" in check.stdout, (
        check.stdout + check.stderr
    )
    tests = subprocess.run(
        ["promtool", "test", "rules", str(tmp_path / "rules.test.yaml")],
        capture_output=True,
        text=True,
    )
    assert tests.returncode == 0, tests.stdout + tests.stderr
    names = {r["alert"] for g in rule["spec"]["groups"] for r in g["rules"]}
    tested = (K8S / "prometheus" / "rules.test.yaml").read_text()
    assert all(name in tested for name in names), "every alert has a unit test"


@pytest.mark.slow
def test_pods_started_with_the_statefulsets_environment_make_the_same_candles(
    trades_file, tmp_path
):
    """The rendered cluster: every pod's environment as the StatefulSet defines it (its
    settings, pod name, StatefulSet name, hostfile), run as local processes."""
    docs = {(d["kind"], d["metadata"]["name"]): d for d in base_resources()}
    sts = docs[("StatefulSet", "candlewax")]
    settings = dict(docs[("ConfigMap", "candlewax-settings")]["data"])
    main = sts["spec"]["template"]["spec"]["containers"][0]
    pods = sts["spec"]["replicas"]
    hostfile = tmp_path / "hostfile.txt"  # loopback ports stand in for the pods' DNS names
    hostfile.write_text("".join(f"127.0.0.1:{free_port()}\n" for _ in range(pods)))
    path, _ = trades_file
    # A file instead of Kafka (no brokers here), a local lake.
    local = {**file_env(path, tmp_path / "lake"), "CANDLEWAX_KAFKA_BROKERS": ""}
    base_env = {k: v for k, v in os.environ.items() if not k.startswith(("CANDLEWAX_", "BYTEWAX_"))}
    processes = []
    for index in range(pods):
        env = {**base_env, **settings, "PYTHONPATH": str(ROOT), "CANDLEWAX_METRICS_PORT": "0"}
        env.pop("BYTEWAX_RECOVERY_DIRECTORY")  # recovery is covered by its own test
        for item in main["env"]:
            if "value" in item:
                env[item["name"]] = item["value"]
            elif item["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name":
                env[item["name"]] = f"{sts['metadata']['name']}-{index}"
        env["BYTEWAX_HOSTFILE_PATH"] = str(hostfile)
        env.update(local)
        processes.append(
            subprocess.Popen(
                [sys.executable, *main["args"][1:]],  # the image's `python`, here this one
                env=env,
                cwd=ROOT,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
            )
        )
    for process in processes:
        out, _ = process.communicate(timeout=300)
        assert process.returncode == 0, out.decode()[-3000:]
    # One plain process with the same flow settings writes the same candles.
    single = tmp_path / "single"
    flow_settings = {k: v for k, v in settings.items() if k.startswith("CANDLEWAX_")}
    run_flow_processes({**flow_settings, **local, "CANDLEWAX_LAKE_DIR": str(single)})
    assert lake_candles(tmp_path / "lake") == lake_candles(single)


def test_what_the_chart_and_waxctl_start_is_the_candle_flow(trades_file, tmp_path):
    """`sh ./entrypoint.sh` with the dataflow file where the chart puts it (its ConfigMap
    copied to /var/bytewax): the same candles as `python -m bytewax.run flows.ohlcv`."""
    path, _ = trades_file
    workdir = tmp_path / "var-bytewax"
    workdir.mkdir()
    shutil.copy(K8S / "helm" / "dataflow.py", workdir / "dataflow.py")
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("CANDLEWAX_", "BYTEWAX_"))},
        **file_env(path, tmp_path / "chart-lake"),
        "PYTHONPATH": str(ROOT),
        "CANDLEWAX_METRICS_PORT": "0",
        "BYTEWAX_WORKDIR": str(workdir),
        "BYTEWAX_PYTHON_FILE_PATH": str(workdir / "dataflow.py"),
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
    }
    result = subprocess.run(
        ["sh", str(K8S / "helm" / "entrypoint.sh")], env=env, capture_output=True, timeout=300
    )
    assert result.returncode == 0, result.stderr.decode()[-3000:]
    run_flow_processes(file_env(path, tmp_path / "module-lake"))
    chart_candles = lake_candles(tmp_path / "chart-lake")
    assert chart_candles and chart_candles == lake_candles(tmp_path / "module-lake")


def test_the_image_gets_every_package_and_the_charts_start_scripts():
    """No Docker engine here to build it: check the Dockerfile copies what
    `pyproject.toml` installs (a package left out breaks `candlewax` in the pods) and the
    scripts the chart runs."""
    import tomllib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    packages = {p.rstrip("*") for p in project["tool"]["setuptools"]["packages"]["find"]["include"]}
    dockerfile = (ROOT / "Dockerfile").read_text()
    copied = {line.split()[1] for line in dockerfile.splitlines() if line.startswith("COPY ")}
    assert packages <= copied, f"not copied into the image: {sorted(packages - copied)}"
    assert "WORKDIR /bytewax" in dockerfile  # the chart mounts /var/bytewax over the image's
    for script in ("entrypoint.sh", "entrypoint-recovery.sh", "dataflow.py"):
        assert f"k8s/helm/{script}" in dockerfile and (K8S / "helm" / script).is_file()
