"""The deploy and monitoring assets under deploy/ and the example configs under config/.

* Prometheus: promtool checks the rules and the config and runs the rules' unit tests.
* Every metric and label that the alerts and the Grafana dashboard query is one a
  running proxy exports, and every dashboard query returns data from those series.
* The example configurations (config/, compose, Kubernetes) validate.
* Kubernetes, compose, Dockerfile and systemd files carry what they promise
  (probes, non-root, hardening, secrets only by reference).
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from rmfproxy.config import Config, load_config
from rmfproxy.relay.policy import Reason
from tests.support import relay
from tests.tls_support import Pki, make_pki

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
ALERTS = DEPLOY / "prometheus" / "alerts.yml"
ALERTS_TEST = DEPLOY / "prometheus" / "alerts_test.yml"
PROMETHEUS_YML = DEPLOY / "prometheus" / "prometheus.yml"
DASHBOARD = DEPLOY / "grafana" / "rmfproxy-dashboard.json"
K8S = DEPLOY / "k8s"
SYSTEMD_UNIT = DEPLOY / "systemd" / "rmfproxy.service"
EXAMPLE_CONFIGS = [ROOT / "config" / "site-single.yaml", ROOT / "config" / "site-4to1.yaml"]

DS_REF = {"type": "prometheus", "uid": "${datasource}"}
TARGET_LABELS = {"job", "instance"}
"""Labels Prometheus attaches to every scraped series."""
GRAFANA_VARS = {"$__rate_interval": "1m", "$__interval": "1m", "$__range": "1h", "$camera": ".*"}
DUMMY_SECRET = "test-secret-0123456789abcdef"
RFC5737 = re.compile(r"^(127\.0\.0\.1|192\.0\.2\.\d+|198\.51\.100\.\d+|203\.0\.113\.\d+)$")

_IDENT = re.compile(r"[A-Za-z_:][A-Za-z0-9_:]*")
_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'')
_SELECTOR = re.compile(r"([A-Za-z_:][A-Za-z0-9_:]*)\s*\{([^}]*)\}")
_MATCHER = re.compile(r'([A-Za-z_][A-Za-z0-9_]*)\s*(=~|!~|!=|=)\s*"([^"]*)"')
_GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\(([^)]*)\)")


# helpers ---------------------------------------------------------------------------


def need_tool(name: str, package: str) -> str:
    """A system tool scripts/setup.sh installs: fail in CI when missing, skip elsewhere."""
    path = shutil.which(name)
    if path is None:
        if os.environ.get("CI"):
            pytest.fail(f"{name} is missing: scripts/setup.sh installs the {package} package")
        pytest.skip(f"{name} is not installed (apt-get install {package})")
    return path


def promtool() -> str:
    return need_tool("promtool", "prometheus")


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=60, check=False)


def walk(node: Any) -> Iterator[tuple[str, Any]]:
    """Every (key, value) pair of nested dicts and lists."""
    if isinstance(node, dict):
        for key, value in node.items():
            yield key, value
            yield from walk(value)
    elif isinstance(node, list):
        for item in node:
            yield from walk(item)


def metric_names(expr: str) -> set[str]:
    """rmfproxy_*, process_* and up series names used in a PromQL expression."""
    bare = _STRING.sub('""', expr)
    return {
        tok
        for tok in _IDENT.findall(bare)
        if tok.startswith(("rmfproxy_", "process_")) or tok == "up"
    }


def load_dashboard() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return data


def all_panels(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    """Top-level panels and those nested in collapsed rows."""
    out: list[dict[str, Any]] = []
    for panel in dashboard["panels"]:
        out.append(panel)
        out.extend(panel.get("panels", []))
    return out


def dashboard_target_exprs() -> list[str]:
    return [
        t["expr"]
        for p in all_panels(load_dashboard())
        for t in p.get("targets", [])
        if t.get("expr")
    ]


def dashboard_exprs() -> list[str]:
    """Panel queries, annotation queries and the camera variable's query."""
    dash = load_dashboard()
    exprs = dashboard_target_exprs()
    exprs += [a["expr"] for a in dash["annotations"]["list"] if a.get("expr")]
    exprs += [v["definition"] for v in dash["templating"]["list"] if v["type"] == "query"]
    return exprs


def alert_rules() -> list[dict[str, Any]]:
    doc = yaml.safe_load(ALERTS.read_text())
    return [rule for group in doc["groups"] for rule in group["rules"]]


def grafana_to_promql(expr: str) -> str:
    for var, value in GRAFANA_VARS.items():
        expr = expr.replace(var, value)
    assert "$" not in expr, f"unknown Grafana variable in {expr!r}"
    return expr


def secret_names(node: Any) -> tuple[set[str], set[str]]:
    """Environment variable names and file paths a config takes secrets from."""
    envs: set[str] = set()
    files: set[str] = set()
    for key, value in walk(node):
        if key in ("password_env", "token_env"):
            envs.add(value)
        elif key in ("password_file", "token_file"):
            files.add(value)
    return envs, files


def assert_no_inline_secret(node: Any, where: str) -> None:
    for key, value in walk(node):
        assert key not in ("password", "token"), f"{where}: inline {key}: {value!r}"


def validate_config(
    data: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str
) -> Config:
    """Validate with load_config and with `rmfproxy check`.

    The environment variables the config names are set; the secret files it names
    are replaced by files in tmp_path.
    """
    assert_no_inline_secret(data, name)
    envs, files = secret_names(data)
    for key, value in walk(data):
        if key == "url":
            host = re.match(r"rtsps?://(?:[^@/]*@)?([^:/]+)", value)
            assert host and RFC5737.match(host.group(1)), f"{name}: {value} is not a doc address"
    # Point file-based secrets at files in tmp_path.
    text = yaml.safe_dump(data)
    for i, path in enumerate(sorted(files)):
        local = tmp_path / f"{name}-secret-{i}"
        local.write_text(DUMMY_SECRET + "\n")
        text = text.replace(path, str(local))
    cfg_file = tmp_path / f"{name}.yaml"
    cfg_file.write_text(text)
    for var in envs:
        monkeypatch.setenv(var, DUMMY_SECRET)
    cfg = load_config(cfg_file)
    exe = Path(sys.executable).with_name("rmfproxy")
    cli = [str(exe)] if exe.exists() else [sys.executable, "-m", "rmfproxy"]
    proc = run(*cli, "check", "--config", str(cfg_file))
    assert proc.returncode == 0, f"{name}: rmfproxy check: {proc.stdout}{proc.stderr}"
    assert proc.stdout.startswith("ok:")
    return cfg


# a running proxy's exposition ------------------------------------------------------


async def _scrape(pki: Pki) -> str:
    tls = {"listen": "127.0.0.1:0", "cert_file": str(pki.cert), "key_file": str(pki.key)}
    async with (
        relay("h264", rtsp={"tls": tls}) as (_sim, proxy),
        aiohttp.ClientSession() as http,
    ):
        await asyncio.sleep(0.3)  # a lag probe or two
        async with http.get(proxy.api_url("/metrics")) as resp:
            assert resp.status == 200
            return await resp.text()


@pytest.fixture(scope="module")
def exposition(tmp_path_factory: pytest.TempPathFactory) -> str:
    """/metrics of a proxy relaying camera "lobby" from sources r1 and r2, with an RTSPS
    listener too (its metrics exist only then)."""
    return asyncio.run(_scrape(make_pki(tmp_path_factory.mktemp("pki"))))


@pytest.fixture(scope="module")
def exported(exposition: str) -> dict[str, set[str]]:
    """Exported sample name (with _total, _bucket, ...) -> its label names."""
    out: dict[str, set[str]] = {}
    for family in text_string_to_metric_families(exposition):
        for sample in family.samples:
            out.setdefault(sample.name, set()).update(sample.labels)
    return out


# 1. promtool ----------------------------------------------------------------------


def test_promtool_checks_rules_and_config() -> None:
    tool = promtool()
    proc = run(tool, "check", "rules", str(ALERTS))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "9 rules found" in proc.stdout
    proc = run(tool, "check", "config", "--syntax-only", str(PROMETHEUS_YML))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    # Without --syntax-only promtool also loads the rule files the config names.
    proc = run(tool, "check", "config", str(PROMETHEUS_YML))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "alerts.yml" in proc.stdout


def test_promtool_unit_tests_of_the_alerts() -> None:
    proc = run(promtool(), "test", "rules", str(ALERTS_TEST))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    # The required alerts are tested both firing and not firing.
    fired: set[str] = set()
    quiet: set[str] = set()
    for case in yaml.safe_load(ALERTS_TEST.read_text())["tests"]:
        for check in case.get("alert_rule_test", []):
            (fired if check.get("exp_alerts") else quiet).add(check["alertname"])
    required = {
        "RmfproxyCameraNoHealthySource",
        "RmfproxySourceDown",
        "RmfproxySwitchStorm",
        "RmfproxySwitchGapAboveBudget",
        "RmfproxyCameraNotDelivering",
        "RmfproxyTlsCertificateExpiresSoon",
    }
    assert required <= fired, required - fired
    assert required <= quiet, required - quiet


def test_alert_rules_are_complete() -> None:
    rules = {r["alert"]: r for r in alert_rules()}
    assert set(rules) == {
        "RmfproxySourceDown",
        "RmfproxyCameraNoHealthySource",
        "RmfproxySwitchStorm",
        "RmfproxySwitchGapAboveBudget",
        "RmfproxyClientsDroppedForSlowness",
        "RmfproxyEventLoopLag",
        "RmfproxyDown",
        "RmfproxyCameraNotDelivering",
        "RmfproxyTlsCertificateExpiresSoon",
    }
    expected = {
        "RmfproxyCameraNotDelivering": ("30s", "critical"),
        "RmfproxySourceDown": ("1m", "warning"),
        "RmfproxyCameraNoHealthySource": ("15s", "critical"),
        "RmfproxyClientsDroppedForSlowness": ("5m", "info"),
        "RmfproxyEventLoopLag": ("2m", None),
        "RmfproxyDown": ("1m", None),
        "RmfproxyTlsCertificateExpiresSoon": ("10m", "warning"),
    }
    for name, rule in rules.items():
        assert rule["labels"]["severity"] in ("critical", "warning", "info"), name
        assert rule["annotations"]["summary"] and rule["annotations"]["description"], name
        if name in expected:
            duration, severity = expected[name]
            assert rule["for"] == duration, name
            assert severity is None or rule["labels"]["severity"] == severity, name
    assert "histogram_quantile(0.99" in rules["RmfproxySwitchGapAboveBudget"]["expr"]
    assert 'direction!="initial"' in rules["RmfproxySwitchStorm"]["expr"]


# 2. metrics and labels are real ---------------------------------------------------


def test_queried_metrics_are_exported(exported: dict[str, set[str]]) -> None:
    used: dict[str, set[str]] = {}
    for expr in dashboard_exprs() + [r["expr"] for r in alert_rules()]:
        for name in metric_names(expr):
            used.setdefault(name, set()).add(expr)
    # up is written by Prometheus itself for every target.
    missing = sorted(set(used) - set(exported) - {"up"})
    assert not missing, "queried but not exported: " + ", ".join(
        f"{m} (in {sorted(used[m])[0]!r})" for m in missing
    )
    for expr in used.get("up", ()):
        assert 'up{job="rmfproxy"}' in expr, f"up without job selector: {expr}"
    # Sanity: the switch counter exists because the proxy made its initial switch.
    assert "rmfproxy_camera_switches_total" in exported
    assert {"rmfproxy_camera_switch_gap_seconds_bucket", "rmfproxy_source_up"} <= set(used)


def test_queried_labels_are_exported(exported: dict[str, set[str]]) -> None:
    directions = {r.value for r in Reason}
    problems: list[str] = []
    for expr in dashboard_exprs() + [r["expr"] for r in alert_rules()]:
        names = metric_names(expr)
        available = set(TARGET_LABELS)
        for name in names:
            available |= exported.get(name, set())
        for name, body in _SELECTOR.findall(expr):
            if name not in names:
                continue
            have = exported.get(name, set()) | TARGET_LABELS
            for label, _op, value in _MATCHER.findall(body):
                if label not in have:
                    problems.append(f"{name} has no label {label!r}: {expr}")
                if label == "direction" and value not in directions:
                    problems.append(f"direction {value!r} is not one of {directions}: {expr}")
        for group in _GROUPING.findall(_STRING.sub('""', expr)):
            for label in filter(None, (g.strip() for g in group.split(","))):
                if label not in available:
                    problems.append(f"grouping label {label!r} not on {sorted(names)}: {expr}")
        # label_values(metric, label) of the camera variable
        for metric, label in re.findall(r"label_values\((\w+),\s*(\w+)\)", expr):
            if label not in exported.get(metric, set()):
                problems.append(f"label_values: {metric} has no label {label!r}")
    assert not problems, "\n".join(problems)
    assert {"camera", "source"} <= exported["rmfproxy_source_up"]
    assert {"camera", "direction", "reason"} <= exported["rmfproxy_camera_switches_total"]
    assert {"camera", "le"} <= exported["rmfproxy_camera_switch_gap_seconds_bucket"]


def test_tls_metrics_say_when_the_certificate_expires(exposition: str) -> None:
    """What the expiry alert reads: the test certificate is made for 2 days."""
    values = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(exposition)
        for s in family.samples
    }
    expiry = values[("rmfproxy_tls_certificate_expiry_timestamp_seconds", ())]
    assert time.time() + 86400 < expiry <= time.time() + 2 * 86400 + 60
    assert values[("rmfproxy_tls_certificate_reloads_total", (("result", "ok"),))] == 0
    assert values[("rmfproxy_tls_certificate_reloads_total", (("result", "failed"),))] == 0
    assert values[("rmfproxy_rtsp_tls_handshake_failures_total", ())] == 0


def test_dashboard_queries_return_data(exposition: str, tmp_path: Path) -> None:
    """Evaluate each panel query with promtool over ten minutes of the exported series."""
    tool = promtool()
    series = []
    for family in text_string_to_metric_families(exposition):
        cumulative = family.type in ("counter", "histogram")
        for s in family.samples:
            if s.name.endswith("_created"):
                continue
            labels = {**s.labels, "job": "rmfproxy", "instance": "rmfproxy:9100"}
            sel = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
            values = f"{s.value}+1x40" if cumulative else f"{s.value}x40"
            series.append({"series": f"{s.name}{{{sel}}}", "values": values})
    series.append({"series": 'up{instance="rmfproxy:9100",job="rmfproxy"}', "values": "1x40"})
    exprs = dashboard_target_exprs()
    rules = [
        {"alert": f"Empty{i}", "expr": f"absent({grafana_to_promql(e)})"}
        for i, e in enumerate(exprs)
    ]
    # The mechanism works: a query of nothing is reported.
    rules.append({"alert": "EmptyControl", "expr": "absent(rmfproxy_no_such_metric)"})
    dash = load_dashboard()
    # Annotation queries filter on changes: only checked to parse.
    rules += [
        {"record": f"annotation:{i}", "expr": grafana_to_promql(a["expr"])}
        for i, a in enumerate(dash["annotations"]["list"])
        if a.get("expr")
    ]
    rule_file = tmp_path / "dashboard_rules.yml"
    rule_file.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    checks: list[dict[str, Any]] = [
        {"eval_time": "10m", "alertname": f"Empty{i}", "exp_alerts": []} for i in range(len(exprs))
    ]
    checks.append(
        {"eval_time": "10m", "alertname": "EmptyControl", "exp_alerts": [{"exp_labels": {}}]}
    )
    test_file = tmp_path / "dashboard_test.yml"
    test_file.write_text(
        yaml.safe_dump(
            {
                "rule_files": [rule_file.name],
                "evaluation_interval": "15s",
                "tests": [{"interval": "15s", "input_series": series, "alert_rule_test": checks}],
            }
        )
    )
    proc = run(tool, "test", "rules", str(test_file))
    if proc.returncode != 0:
        output = proc.stdout + proc.stderr
        empty = sorted({int(n) for n in re.findall(r"alertname: Empty(\d+)", output)})
        pytest.fail(
            "dashboard queries without data: "
            + "; ".join(exprs[i] for i in empty)
            + "\n"
            + output[-3000:]
        )


# 3. example configurations -------------------------------------------------------


@pytest.mark.parametrize("path", EXAMPLE_CONFIGS, ids=lambda p: p.name)
def test_example_configs_validate(
    path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = yaml.safe_load(path.read_text())
    cfg = validate_config(data, tmp_path, monkeypatch, path.stem)
    assert all(len(cam.sources) == 2 for cam in cfg.cameras.values())
    if path.name == "site-single.yaml":
        assert len(cfg.cameras) == 3
    else:
        primaries: dict[str, int] = {}
        for cam in cfg.cameras.values():
            primary, spare = (cam.sources[0].name, cam.sources[1].name)
            assert spare == "nvr-spare"
            primaries[str(primary)] = primaries.get(str(primary), 0) + 1
        assert sorted(primaries) == ["nvr-a", "nvr-b", "nvr-c", "nvr-d"]
        assert all(2 <= n <= 4 for n in primaries.values()), primaries
        sources = [s for cam in cfg.cameras.values() for s in cam.sources]
        assert any(s.transport == "udp" for s in sources)
        assert any(s.username and s.password_env for s in sources)
        assert {u.password_env is not None for u in cfg.rtsp.users} == {True, False}
        assert cfg.api.token_env is not None
        cams = cfg.cameras.values()
        assert any(c.stall_timeout != 0.15 for c in cams)
        assert any(c.failback_hold != 10.0 for c in cams)


def test_compose_config_validates(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    data = yaml.safe_load((DEPLOY / "compose-config.yaml").read_text())
    cfg = validate_config(data, tmp_path, monkeypatch, "compose-config")
    # Inside the container the listeners bind every interface.
    assert cfg.rtsp.listen == "0.0.0.0:8554"
    assert cfg.api.listen == "0.0.0.0:9100"
    # The token is the compose secret rmfproxy_api_token.
    assert data["api"]["token_file"] == "/run/secrets/rmfproxy_api_token"


# 4. Kubernetes, compose, Dockerfile, systemd ------------------------------------


def k8s_docs() -> dict[str, list[dict[str, Any]]]:
    return {
        p.name: [d for d in yaml.safe_load_all(p.read_text()) if d]
        for p in sorted(K8S.glob("*.yaml"))
    }


def test_k8s_manifests(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    docs = k8s_docs()
    kinds = {name: [d["kind"] for d in ds] for name, ds in docs.items()}
    assert kinds == {
        "configmap.yaml": ["ConfigMap"],
        "deployment.yaml": ["Deployment"],
        "kustomization.yaml": ["Kustomization"],
        "secret.example.yaml": ["Secret"],
        "service.yaml": ["Service"],
    }
    kustomization = docs["kustomization.yaml"][0]
    assert sorted(kustomization["resources"]) == [
        "configmap.yaml",
        "deployment.yaml",
        "service.yaml",
    ]

    deployment = docs["deployment.yaml"][0]
    spec = deployment["spec"]
    assert spec["replicas"] == 1
    pod = spec["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] != 0
    (container,) = pod["containers"]
    sc = container["securityContext"]
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"]["drop"] == ["ALL"]
    assert container["resources"]["requests"] and container["resources"]["limits"]
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": 9100}
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": 9100}
    assert {p["containerPort"] for p in container["ports"]} == {8554, 9100}

    # Secrets only by reference to rmfproxy-secrets.
    refs = [v["name"] for k, v in walk(pod) if k == "secretKeyRef"]
    refs += [v["secretName"] for k, v in walk(pod) if k == "secret"]
    assert refs and set(refs) == {"rmfproxy-secrets"}
    for env in container["env"]:
        assert "value" not in env, f"literal env value: {env}"
    secret_keys = set(docs["secret.example.yaml"][0]["stringData"])
    used_keys = {v["key"] for k, v in walk(pod) if k == "secretKeyRef"}
    used_keys |= {i["key"] for k, v in walk(pod) if k == "secret" for i in v.get("items", [])}
    assert used_keys <= secret_keys
    for value in docs["secret.example.yaml"][0]["stringData"].values():
        assert value.startswith("CHANGE-ME"), "secret.example.yaml must hold placeholders only"

    # The proxy config in the ConfigMap validates and matches the pod's secrets.
    config = yaml.safe_load(docs["configmap.yaml"][0]["data"]["config.yaml"])
    envs, files = secret_names(config)
    assert envs <= {e["name"] for e in container["env"]}
    (secret_mount,) = [m for m in container["volumeMounts"] if m["name"] == "secrets"]
    assert files == {f"{secret_mount['mountPath']}/api-token"}
    cfg = validate_config(config, tmp_path, monkeypatch, "k8s-configmap")
    assert cfg.rtsp.listen == "0.0.0.0:8554" and cfg.api.listen == "0.0.0.0:9100"
    config_mount = next(m for m in container["volumeMounts"] if m["name"] == "config")
    assert container["args"] == ["run", "--config", f"{config_mount['mountPath']}/config.yaml"]

    service = docs["service.yaml"][0]
    ports = {p["name"]: (p["port"], p.get("protocol", "TCP")) for p in service["spec"]["ports"]}
    assert ports == {"rtsp": (8554, "TCP"), "http-admin": (9100, "TCP")}
    assert service["spec"]["selector"] == spec["selector"]["matchLabels"]

    # No literal password anywhere but the placeholder example.
    for name, ds in docs.items():
        if name != "secret.example.yaml":
            assert_no_inline_secret(ds, name)
            assert "stringData" not in (DEPLOY / "k8s" / name).read_text()


def _compose_mounts(service: dict[str, Any]) -> dict[str, str]:
    """container path -> host path (relative to deploy/) of a service's bind mounts."""
    out = {}
    for volume in service.get("volumes", []):
        host, container = volume.split(":")[:2]
        if host.startswith("."):
            out[container] = host
    return out


def test_compose_file() -> None:
    compose = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    services = compose["services"]
    assert set(services) >= {"rmfproxy", "prometheus", "grafana"}
    proxy = services["rmfproxy"]
    assert (DEPLOY / proxy["build"]["context"] / proxy["build"]["dockerfile"]).is_file()
    assert any(p.endswith("8554:8554") for p in proxy["ports"])
    assert any(p.endswith("9100:9100") for p in proxy["ports"])
    mounts = {c: h for s in services.values() for c, h in _compose_mounts(s).items()}
    for host in mounts.values():
        assert (DEPLOY / host).exists(), f"compose mounts missing {host}"
    assert mounts["/etc/rmfproxy/config.yaml"] == "./compose-config.yaml"
    prom = _compose_mounts(services["prometheus"])
    assert prom["/etc/prometheus/prometheus.yml"] == "./prometheus/prometheus.yml"
    assert prom["/etc/prometheus/alerts.yml"] == "./prometheus/alerts.yml"
    graf = _compose_mounts(services["grafana"])
    provider = yaml.safe_load(
        (DEPLOY / "grafana/provisioning/dashboards/rmfproxy.yaml").read_text()
    )
    dash_dir = provider["providers"][0]["options"]["path"]
    assert graf[f"{dash_dir}/rmfproxy-dashboard.json"] == "./grafana/rmfproxy-dashboard.json"
    assert any(c.startswith("/etc/grafana/provisioning") for c in graf)

    # Secrets: compose secrets or env_file, never an inline value.
    for name, service in services.items():
        env = service.get("environment", {})
        for key, value in env.items():
            if re.search("PASSWORD|TOKEN|SECRET", key):
                assert key.endswith("__FILE") and str(value).startswith("/run/secrets/"), (
                    f"{name}: inline secret {key}"
                )
    assert "rmfproxy_api_token" in proxy["secrets"]
    assert all("file" in s for s in compose["secrets"].values())

    # Prometheus scrapes the compose service on the config's admin port.
    prom_cfg = yaml.safe_load(PROMETHEUS_YML.read_text())
    (job,) = [j for j in prom_cfg["scrape_configs"] if j["job_name"] == "rmfproxy"]
    assert job["static_configs"][0]["targets"] == ["rmfproxy:9100"]
    assert prom_cfg["rule_files"] == ["alerts.yml"]
    datasource = yaml.safe_load(
        (DEPLOY / "grafana/provisioning/datasources/prometheus.yaml").read_text()
    )["datasources"][0]
    assert datasource["type"] == "prometheus"
    assert datasource["url"] == "http://prometheus:9090"


def test_dockerfile_and_dockerignore() -> None:
    text = (DEPLOY / "Dockerfile").read_text()
    lines = [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.startswith("#")]
    froms = [ln for ln in lines if ln.startswith("FROM ")]
    assert len(froms) >= 2 and all("python:3.11-slim-bookworm" in f for f in froms)
    final = lines[lines.index(froms[-1]) :]
    users = [ln.split()[1] for ln in final if ln.startswith("USER ")]
    assert users and users[-1].split(":")[0] not in ("root", "0"), users
    assert any(ln.startswith("HEALTHCHECK") for ln in final)
    assert "http://127.0.0.1:9100/healthz" in text and "urllib" in text
    assert "EXPOSE 8554 9100" in final
    assert 'ENTRYPOINT ["rmfproxy"]' in final
    assert 'CMD ["run", "--config", "/etc/rmfproxy/config.yaml"]' in final
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert {".venv", ".git", "docs/bench"} <= set(ignored)
    assert any("__pycache__" in p for p in ignored)


def test_systemd_unit() -> None:
    keys: dict[str, list[str]] = {}
    for line in SYSTEMD_UNIT.read_text().splitlines():
        if "=" in line and not line.startswith(("#", ";")):
            key, _, value = line.partition("=")
            keys.setdefault(key.strip(), []).append(value.strip())
    expected = {
        "Type": "exec",
        "ExecStart": "/usr/local/bin/rmfproxy run --config /etc/rmfproxy/config.yaml",
        "EnvironmentFile": "-/etc/rmfproxy/secrets.env",
        "DynamicUser": "yes",
        "User": "rmfproxy",
        "NoNewPrivileges": "yes",
        "ProtectSystem": "strict",
        "ProtectHome": "yes",
        "PrivateTmp": "yes",
        "PrivateDevices": "yes",
        "ProtectKernelTunables": "yes",
        "ProtectKernelModules": "yes",
        "ProtectKernelLogs": "yes",
        "ProtectControlGroups": "yes",
        "RestrictAddressFamilies": "AF_INET AF_INET6 AF_UNIX",
        "RestrictNamespaces": "yes",
        "LockPersonality": "yes",
        "CapabilityBoundingSet": "",
        "Restart": "on-failure",
        "RestartSec": "2",
        "LimitNOFILE": "65536",
    }
    for key, value in expected.items():
        assert value in keys.get(key, []), f"{key}={value} missing: {keys.get(key)}"
    assert "@system-service" in keys["SystemCallFilter"]
    assert any(v.startswith("-api-token:") for v in keys["LoadCredential"])


def test_systemd_unit_verifies(tmp_path: Path) -> None:
    analyze = need_tool("systemd-analyze", "systemd")
    # verify wants the executables to exist: point them at this environment's CLI.
    exe = Path(sys.executable).with_name("rmfproxy")
    unit = tmp_path / "rmfproxy.service"
    unit.write_text(SYSTEMD_UNIT.read_text().replace("/usr/local/bin/rmfproxy", str(exe)))
    proc = subprocess.run(
        [analyze, "verify", str(unit)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


# 5. the Grafana dashboard --------------------------------------------------------


def test_dashboard_structure() -> None:
    dash = load_dashboard()
    assert dash["schemaVersion"] == 39
    assert dash["uid"] and dash["title"]
    variables = {v["name"]: v for v in dash["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    camera = variables["camera"]
    assert camera["definition"] == "label_values(rmfproxy_source_up, camera)"
    assert camera["multi"] is True and camera["includeAll"] is True
    assert camera["datasource"] == DS_REF

    panels = all_panels(dash)
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids)), "duplicate panel ids"
    occupied: dict[tuple[int, int], str] = {}
    for p in panels:
        g = p["gridPos"]
        assert g["x"] + g["w"] <= 24, p["title"]
        for x in range(g["x"], g["x"] + g["w"]):
            for y in range(g["y"], g["y"] + g["h"]):
                assert (x, y) not in occupied, f"{p['title']} overlaps {occupied[(x, y)]}"
                occupied[(x, y)] = p["title"]
        if p["type"] == "row":
            continue
        assert p["datasource"] == DS_REF, p["title"]
        assert p["targets"], p["title"]
        for t in p["targets"]:
            assert t["datasource"] == DS_REF, p["title"]
            assert t["expr"].strip(), p["title"]
    for a in dash["annotations"]["list"]:
        if a.get("expr"):
            assert a["datasource"] == DS_REF

    builtin = {"timeseries", "stat", "state-timeline", "table", "bargauge", "heatmap", "row"}
    assert {p["type"] for p in panels} <= builtin, "only Grafana's built-in panels"

    def heatmap_of(metric: str) -> dict[str, Any]:
        for p in panels:
            if p["type"] == "heatmap" and any(metric in t["expr"] for t in p["targets"]):
                return p
        raise AssertionError(f"no heatmap of {metric}")

    for metric in (
        "rmfproxy_camera_switch_gap_seconds_bucket",
        "rmfproxy_camera_switch_detection_seconds_bucket",
    ):
        hm = heatmap_of(metric)
        assert all(t.get("format") == "heatmap" for t in hm["targets"])
        assert hm["options"]["calculate"] is False
    exprs = dashboard_target_exprs()
    assert any(
        "histogram_quantile(0.99" in e
        and "by (camera, le)" in e
        and "rmfproxy_camera_switch_gap_seconds_bucket" in e
        for e in exprs
    )
    assert any("rmfproxy_camera_switches_total" in e and "direction, reason" in e for e in exprs)
    timelines = [p for p in panels if p["type"] == "state-timeline"]
    assert any("rmfproxy_source_active" in t["expr"] for p in timelines for t in p["targets"])
