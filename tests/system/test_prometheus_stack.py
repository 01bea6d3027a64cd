"""The shipped Prometheus rules, Alertmanager config and Grafana dashboard, on the real servers.

promtool and amtool check the files and run the rules' unit tests; then the daemon follows a file,
a real Prometheus (1 s scrapes and evaluations) scrapes it with the shipped rules, and a real
Alertmanager with the shipped routing delivers to a webhook run by the test: bad_certificate
failures page with the context a person needs, and the page resolves when they stop. Every
expression of the dashboard then runs against that Prometheus and returns data.
"""

from __future__ import annotations

import datetime as dt
import json
import re
import subprocess
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from apigee_tls_exporter.demo.standin import Standin, chain_info
from helpers import records
from helpers.markdown import heading_anchors
from helpers.stack import (
    ALERTMANAGER_YML,
    DASHBOARD,
    PREDICTED_ROW,
    PROMETHEUS_YML,
    REPO,
    RULES,
    RULES_TEST,
    Stack,
    binary,
    dashboard_rows,
    get_json,
    poll,
)
from helpers.support import EXPORTER, ExporterProcess, free_port
from helpers.tls_backends import Pki

pytestmark = pytest.mark.slow

RUNBOOK = REPO / "docs" / "runbook.md"
RUNBOOK_URL = "https://github.com/apigee-tls-exporter/apigee-tls-exporter/blob/main/docs/runbook.md"
# The PromQL alternative to the daemon-side failure alerts, and its unit tests (not loaded by the
# shipped prometheus.yml).
PROMQL_RULES = RULES.with_name("apigee-tls.promql-alerts.yml")
PROMQL_RULES_TEST = RULES.with_name("apigee-tls.promql-alerts.test.yml")
# The page's backend is a closed port on 127.0.0.1: the daemon's background diagnosis of it
# (which the dashboard shows) finds it unreachable without sending traffic anywhere else.
PAYMENTS = f"127.0.0.1:{free_port()}"
PAYMENTS_REMOTE = f"/{PAYMENTS}"
LEGACY = "10.40.2.9:443"


def run(*args: str, cwd: Path = REPO) -> str:
    done = subprocess.run(args, cwd=cwd, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, f"{' '.join(args)}:\n{done.stdout}\n{done.stderr}"
    return done.stdout + done.stderr


def alerting_rules(*files: Path) -> list[dict[str, Any]]:
    """The alerting rules of the given files (default: the shipped one and the alternative)."""
    rules = []
    for path in files or (RULES, PROMQL_RULES):
        groups = yaml.safe_load(path.read_text())["groups"]
        rules += [rule for group in groups for rule in group["rules"] if "alert" in rule]
    return rules


# --- the files, with the real tools ---------------------------------------------------------------


def test_promtool_checks_the_rules_and_the_example_config() -> None:
    """`promtool check rules` accepts the rules file and `promtool check config` the example
    prometheus.yml (which loads the rules)."""
    promtool = binary("promtool")
    assert "SUCCESS" in run(promtool, "check", "rules", str(RULES), str(PROMQL_RULES))
    assert "SUCCESS" in run(promtool, "check", "config", str(PROMETHEUS_YML))


def test_promtool_unit_tests_pass() -> None:
    """`promtool test rules` passes the unit tests of the rules and of the PromQL alternative."""
    for tests in (RULES_TEST, PROMQL_RULES_TEST):
        out = run(binary("promtool"), "test", "rules", tests.name, cwd=tests.parent)
        assert "SUCCESS" in out, tests.name


def test_one_family_of_failure_alerts_is_on_by_default() -> None:
    """The shipped prometheus.yml loads only apigee-tls.rules.yml, whose failure alerts are the
    daemon-side ones (none reads the failure counters); every alert of the PromQL alternative that
    duplicates one of them is inhibited by it in the Alertmanager example, for the same labels."""
    assert yaml.safe_load(PROMETHEUS_YML.read_text())["rule_files"] == [RULES.name]
    default = alerting_rules(RULES)
    assert not [r["alert"] for r in default if "apigee_tls_handshake_failures" in r["expr"]]
    names = {r["alert"] for r in default}
    inhibits = yaml.safe_load(ALERTMANAGER_YML.read_text())["inhibit_rules"]
    twins = {}
    for rule in inhibits:
        [source], [target] = rule["source_matchers"], rule["target_matchers"]
        if source.startswith("alertname"):
            twins[target.split('"')[1]] = (source.split('"')[1], rule["equal"])
    for rule in alerting_rules(PROMQL_RULES):
        name = rule["alert"]
        assert name not in names, name
        assert name in twins, f"{name}: no inhibit rule from its daemon-side twin"
        assert twins[name][0] in names, name


def seconds(duration: str) -> float:
    """A promtool eval_time such as 90s, 13m, 2h or 1d, in seconds."""
    match = re.fullmatch(r"(\d+)([smhd])", duration)
    assert match, duration
    return int(match[1]) * {"s": 1, "m": 60, "h": 3600, "d": 86400}[match[2]]


def test_every_alerting_rule_has_unit_tests_that_fire_stay_quiet_and_resolve() -> None:
    """Each alerting rule is tested quiet before it fires, firing, and quiet again after it fired
    (resolved), within one test group."""
    tests = [
        test
        for path in (RULES_TEST, PROMQL_RULES_TEST)
        for test in yaml.safe_load(path.read_text())["tests"]
    ]
    for rule in alerting_rules():
        name = rule["alert"]
        ok = False
        for test in tests:
            cases = [c for c in test.get("alert_rule_test", []) if c["alertname"] == name]
            firing = [seconds(c["eval_time"]) for c in cases if c.get("exp_alerts")]
            quiet = [seconds(c["eval_time"]) for c in cases if not c.get("exp_alerts")]
            before = firing and any(t < min(firing) for t in quiet)
            after = firing and any(t > max(firing) for t in quiet)
            ok = ok or bool(before and after)
        assert ok, f"{name}: no test group with quiet, firing and resolved evaluations"


def test_every_alert_explains_itself_and_links_the_runbook() -> None:
    """Every alert has a severity (its own label or the daemon's), a summary, a description and a
    runbook_url into docs/runbook.md whose anchor exists; the failure alerts name org, env,
    target, key alias and reason, and carry the cause."""
    anchors = heading_anchors(RUNBOOK.read_text())
    for rule in alerting_rules():
        name, notes = rule["alert"], rule["annotations"]
        assert {"summary", "description", "runbook_url"} <= set(notes), name
        assert "severity" in rule.get("labels", {}) or "apigee_tls_alert_firing" in rule["expr"]
        url = notes["runbook_url"]
        assert url.startswith(RUNBOOK_URL + "#"), name
        anchor = url.split("#", 1)[1]
        if anchor == "{{ $labels.reason }}":
            text = notes["summary"] + notes["description"]
            for label in ("org", "env", "target", "key_alias", "reason"):
                assert "$labels." + label in text, f"{name}: description lacks {label}"
            assert "cause" in notes, name
        else:
            assert anchor in anchors, f"{name}: runbook has no #{anchor}"


def test_amtool_checks_the_alertmanager_example() -> None:
    """`amtool check-config` accepts the Alertmanager example."""
    out = run(binary("amtool"), "check-config", str(ALERTMANAGER_YML))
    assert "SUCCESS" in out


def test_alertmanager_example_routes_groups_and_inhibits() -> None:
    """The example routes page and warning to their own receivers, groups by org/env/target and
    inhibits warning by page for the same org/env/target (first of its inhibit rules)."""
    config = yaml.safe_load(ALERTMANAGER_YML.read_text())
    routes = {tuple(r["matchers"]): r for r in config["route"]["routes"]}
    assert (
        routes[('severity = "page"',)]["receiver"] != routes[('severity = "warning"',)]["receiver"]
    )
    for route in routes.values():
        assert route["group_by"] == ["org", "env", "target"]
    inhibit = config["inhibit_rules"][0]
    assert inhibit["source_matchers"] == ['severity = "page"']
    assert inhibit["target_matchers"] == ['severity = "warning"']
    assert inhibit["equal"] == ["org", "env", "target"]


# --- the dashboard file ---------------------------------------------------------------------------


def dashboard() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return data


def panels() -> list[dict[str, Any]]:
    return [p for p in dashboard()["panels"] if p["type"] != "row"]


def test_dashboard_has_what_grafana_needs() -> None:
    """The dashboard JSON has a uid, a schemaVersion, a Prometheus datasource variable and
    node/org/env variables, and every panel (and target) refers to the datasource variable."""
    board = dashboard()
    assert board["uid"] == "apigee-tls"
    assert isinstance(board["schemaVersion"], int) and board["schemaVersion"] >= 36
    variables = {v["name"]: v for v in board["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    for name in ("node", "org", "env"):
        assert variables[name]["type"] == "query"
        assert variables[name]["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
    ids = [p["id"] for p in board["panels"]]
    assert len(ids) == len(set(ids))
    for panel in panels():
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, panel["title"]
        assert set(panel["gridPos"]) == {"h", "w", "x", "y"}
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            assert target["datasource"]["uid"] == "${datasource}"
            assert target["expr"] and target["refId"]


def test_dashboard_covers_the_issue() -> None:
    """Panels for failure rate by reason and by target, the top failing table, alerts firing,
    last failure time, diagnosed causes, client-certificate expiry, and exporter health: up and
    version per node, read errors, config reload, lag, lines/s, unrecognised lines, pairing,
    series overflow, checkpoint age."""
    exprs = " ".join(t["expr"] for p in panels() for t in p["targets"])
    for metric in (
        "apigee_tls_handshake_failures_total",
        "apigee_tls_alert_firing",
        "apigee_tls_last_handshake_failure_timestamp_seconds",
        "apigee_tls_log_file_size_bytes",
        "apigee_tls_log_offset_bytes",
        "apigee_tls_log_lines_total",
        "apigee_tls_unrecognised_lines_total",
        "apigee_tls_pairing_pending",
        "apigee_tls_pairing_unpaired_total",
        "apigee_tls_series_overflow_total",
        "apigee_tls_checkpoint_age_seconds",
        # what on-call looks for (issue 15)
        "apigee_tls_client_certificate_expiry_timestamp_seconds",
        'up{job="apigee-tls"',
        "apigee_tls_build_info",
        "apigee_tls_log_read_errors_total",
        "apigee_tls_config_last_reload_successful",
        "apigee_tls_diagnosis_info",
    ):
        assert metric in exprs, metric
    assert "sum by (reason)" in exprs and "sum by (org, env, target)" in exprs
    assert "topk(" in exprs


def test_dashboard_units_say_what_is_counted() -> None:
    """No panel uses a request unit; the failure panels' units say failures."""
    for panel in panels():
        unit = panel["fieldConfig"]["defaults"].get("unit", "")
        assert unit not in ("reqps", "rps", "reqpm"), panel["title"]
        if "apigee_tls_handshake_failures_total" in " ".join(t["expr"] for t in panel["targets"]):
            assert "failures" in unit, panel["title"]


def substitute(expr: str) -> str:
    """The expression as Grafana sends it with All selected for every variable."""
    for name, value in (
        ("$__rate_interval", "1m"),
        ("$__range", "5m"),
        ("$__interval", "15s"),
        ("$node", ".*"),
        ("$org", ".*"),
        ("$env", ".*"),
    ):
        expr = expr.replace(name, value)
    assert "$" not in expr, expr
    return expr


# --- end to end -----------------------------------------------------------------------------------


class Exporter(ExporterProcess):
    """``apigee-tls-exporter run`` on the port Prometheus scrapes."""

    def __init__(self, port: int, *args: str) -> None:
        super().__init__(*args)
        self.port = port
        self.args = [*EXPORTER, "run", "--listen", f"127.0.0.1:{port}", *args]


def now_stamp() -> str:
    """The MP's timestamp format for now (UTC: the daemon's config says so)."""
    moment = dt.datetime.now(dt.timezone.utc)
    return moment.strftime("%Y-%m-%d %H:%M:%S,") + f"{moment.microsecond // 1000:03d}"


def failure_record(n: int, reason: str, remote: str, alias: str, api: str) -> str:
    """One failure as the MP logs it: handshakeFailed, SSLInfo, onException and its trace.
    ``remote`` is the Remote host address as Java prints it (hostname/ip:port or ip:port)."""
    stamp, thread = now_stamp(), f"NIOThread@{n % 4}"
    ctx = records.context(f"rrt-0d027480041e2a148-a-de-{n}-1", api=api)
    return records.text(
        [
            records.failed(
                message=f"Received fatal alert: {reason}",
                remote=remote,
                ctx=ctx,
                thread=thread,
                stamp=stamp,
            ),
            records.ssl_info(alias=alias, ctx=ctx, thread=thread, stamp=stamp),
            *records.on_exception(alert=reason, ctx=ctx, thread=thread, stamp=stamp),
        ]
    )


@dataclass
class Scenario:
    stack: Stack
    exporter: Exporter
    log: Path

    def append(self, text: str) -> None:
        with self.log.open("a", encoding="utf-8") as f:
            f.write(text)


DAEMON_CONFIG: dict[str, Any] = {
    "timezone": "UTC",
    "alerts": {
        # short windows so that the page fires and resolves within seconds
        "client_certificate_rejected": {"min_failures": 3, "window": "10s", "resolve_after": "8s"},
        # one failure of another reason is a warning that lasts the whole module
        "handshake_failures": {"min_failures": 1, "window": "10m"},
        "known_targets": [
            {
                "org": "acme",
                "env": "prod",
                "api": "payments-v1",
                "rev": "7",
                "target": PAYMENTS,
                "key_alias": "backend-client",
            }
        ],
    },
}


@pytest.fixture(scope="module")
def scenario(
    prometheus_stack: Stack, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Scenario]:
    """The daemon follows a log on the port Prometheus scrapes (and a "log" it cannot read), with
    diagnosis and keystore inventory on a management API stand-in; one handshake_failure failure
    to the legacy backend is in the log (a warning that keeps firing), and Prometheus scraped it."""
    tmp = tmp_path_factory.mktemp("e2e")
    log = tmp / "system.log"
    log.write_text(f"{now_stamp()}  main INFO MESSAGING.RUNTIME - MessageProcessor started\n")
    unreadable = tmp / "not-a-log"  # a second "log" that is a directory: a read error
    unreadable.mkdir()
    config = tmp / "apigee-tls-exporter.yml"
    standin = Standin()
    cert, _ = Pki(tmp).client(Pki(tmp).accepted_ca, "mp", days=(-1, 10))
    standin.env("acme", "prod").keystores["backendKs"] = {
        "backend-client": chain_info(Path(cert).read_bytes())
    }
    password_file = tmp / "mgmt-password"
    password_file.write_text(standin.password + "\n")
    diagnosis = {
        "enabled": True,
        "management_url": standin.url,
        "username": standin.username,
        "password_file": str(password_file),
        "timeout": "5s",
        "default_keystore": "backendKs",
        "inventory": {"keystores": [{"org": "acme", "env": "prod", "keystore": "backendKs"}]},
    }
    config.write_text(yaml.safe_dump({**DAEMON_CONFIG, "diagnosis": diagnosis}))
    args = ("--config", str(config), "--log", str(log), "--log", str(unreadable))
    args += ("--state-file", str(tmp / "state.json"))
    exporter = Exporter(prometheus_stack.exporter_port, *args, "--from-beginning")
    with standin, exporter:
        scenario = Scenario(prometheus_stack, exporter, log)
        scenario.append(failure_record(1, "handshake_failure", LEGACY, "null", "legacy-orders"))
        poll(
            lambda: prometheus_stack.query(
                f'apigee_tls_handshake_failures_total{{target="{LEGACY}"}} == 1'
            ),
            30,
            "Prometheus to scrape the first failure",
            prometheus_stack.servers[-1].log,
        )
        yield scenario


def page(stack: Stack, status: str) -> Any:
    """The payments page alert with ``status`` from the page receiver, with its notification's
    group labels under ``"groupLabels"``; None before it arrived."""
    for path, notification in list(stack.webhook.notifications):
        for alert in notification.get("alerts", []):
            labels = alert["labels"]
            if (
                path == "/apigee-tls/page"
                and alert["status"] == status
                and labels["alertname"] == "ApigeeTLSClientCertificateRejected"
                and labels.get("target") == PAYMENTS
            ):
                return {**alert, "groupLabels": notification["groupLabels"]}
    stack.check_running()
    return None


def page_alerts(stack: Stack, status: str) -> list[dict[str, Any]]:
    """The alerts with ``status`` the page receiver got for the payments target, one per
    identity (a repeated notification of the same alert counts once)."""
    seen: dict[str, dict[str, Any]] = {}
    for alert in stack.webhook.alerts("/apigee-tls/page"):
        if alert["status"] == status and alert["labels"].get("target") == PAYMENTS:
            seen.setdefault(alert["fingerprint"], alert)
    return list(seen.values())


def notifications(stack: Stack) -> str:
    """What the webhook received, for a failure message."""
    return "\n".join(
        f"{path} {a['status']} {a['labels'].get('alertname')} {a['labels'].get('target')}"
        for path, n in stack.webhook.notifications
        for a in n.get("alerts", [])
    )


def test_bad_certificate_failures_page_and_resolve(scenario: Scenario) -> None:
    """Three bad_certificate failures for one (target, key alias) reach the page receiver with
    org, env, target, key alias, reason, the proxy and the runbook link; a warning for the same
    target is inhibited meanwhile; when the failures stop, the resolved notification arrives."""
    stack = scenario.stack
    records = [
        failure_record(10 + n, "bad_certificate", PAYMENTS_REMOTE, "backend-client", "payments-v1")
        for n in range(3)
    ]
    records.append(
        failure_record(20, "remote_closed", PAYMENTS_REMOTE, "backend-client", "payments-v1")
    )
    scenario.append("".join(records))

    firing = poll(
        lambda: page(stack, "firing"),
        40,
        "the page notification",
        stack.servers[-1].log,
        lambda: notifications(stack) + "\n" + scenario.exporter.scrape(),
    )
    labels, notes = firing["labels"], firing["annotations"]
    assert labels["org"] == "acme"
    assert labels["env"] == "prod"
    assert labels["target"] == PAYMENTS
    assert labels["key_alias"] == "backend-client"
    assert labels["reason"] == "bad_certificate"
    assert labels["severity"] == "page"
    assert firing["groupLabels"] == {"org": "acme", "env": "prod", "target": PAYMENTS}
    assert notes["runbook_url"] == f"{RUNBOOK_URL}#bad_certificate"
    assert "payments-v1" in notes["description"]
    assert "backend-client" in notes["summary"]

    def inhibited() -> bool:
        alerts = get_json(f"{stack.alertmanager_url}/api/v2/alerts")
        return any(
            a["labels"]["alertname"] == "ApigeeTLSHandshakeFailures"
            and a["labels"].get("target") == PAYMENTS
            and a["status"]["inhibitedBy"]
            for a in alerts
        )

    poll(inhibited, 20, "the warning for the same target to be inhibited by the page")
    pages = [
        a
        for a in get_json(f"{stack.alertmanager_url}/api/v2/alerts?active=true")
        if a["labels"].get("severity") == "page" and a["labels"].get("target") == PAYMENTS
    ]
    assert [a["labels"]["alertname"] for a in pages] == ["ApigeeTLSClientCertificateRejected"]
    assert [a["labels"] for a in page_alerts(stack, "firing")] == [labels]

    resolved = poll(
        lambda: page(stack, "resolved"),
        40,
        "the resolved notification",
        extra=lambda: notifications(stack),
    )
    assert resolved["fingerprint"] == firing["fingerprint"]
    assert resolved["annotations"]["runbook_url"] == f"{RUNBOOK_URL}#bad_certificate"


def test_a_warning_reaches_the_warning_receiver(scenario: Scenario) -> None:
    """The handshake_failure failure to the legacy backend is routed to the warning receiver."""
    stack = scenario.stack

    def warning() -> Any:
        for alert in stack.webhook.alerts("/apigee-tls/warning"):
            if alert["labels"].get("target") == LEGACY and alert["status"] == "firing":
                return alert
        return None

    alert = poll(warning, 40, "the warning notification")
    assert alert["labels"]["alertname"] == "ApigeeTLSHandshakeFailures"
    assert alert["labels"]["reason"] == "handshake_failure"
    assert alert["annotations"]["runbook_url"] == f"{RUNBOOK_URL}#handshake_failure"
    assert "legacy-orders" in alert["annotations"]["description"]


def test_every_dashboard_expression_returns_data(scenario: Scenario) -> None:
    """Every panel expression (All selected) returns data from the real Prometheus once failures
    were ingested, and every variable query finds values (the predicted failures' row needs
    /probe targets: test_probe.py runs it)."""
    stack = scenario.stack
    predicted = {p["id"] for p in dashboard_rows()[PREDICTED_ROW]}
    for panel in panels():
        if panel["id"] in predicted:
            continue
        for target in panel["targets"]:
            expr = substitute(target["expr"])
            poll(lambda e=expr: stack.query(e), 20, f"data for {panel['title']!r}: {expr}")
    for variable in dashboard()["templating"]["list"]:
        if variable["type"] != "query":
            continue
        match = re.fullmatch(r"label_values\((.+), (\w+)\)", variable["definition"])
        assert match, variable["definition"]
        selector, label = substitute(match[1]), match[2]
        values = poll(lambda s=selector, n=label: stack.label_values(n, s), 20, variable["name"])
        assert values, variable["name"]


def test_recording_rules_produce_series(scenario: Scenario) -> None:
    """The recording rules produce series on the real Prometheus."""
    stack = scenario.stack
    groups = yaml.safe_load(RULES.read_text())["groups"]
    names = [r["record"] for g in groups for r in g["rules"] if "record" in r]
    for name in names:
        if name.endswith(":increase5m"):
            continue  # counts a new series only once Prometheus has 5 minutes of `up` history
        poll(lambda n=name: stack.query(n), 20, f"recording rule {name}")


def post_alerts(stack: Stack, alerts: list[dict[str, Any]]) -> None:
    """Alerts posted to the real Alertmanager as Prometheus would, lasting 10 minutes."""
    ends = (dt.datetime.now(dt.timezone.utc) + dt.timedelta(minutes=10)).isoformat()
    body = json.dumps([{"labels": a, "endsAt": ends} for a in alerts]).encode()
    request = urllib.request.Request(
        f"{stack.alertmanager_url}/api/v2/alerts",
        data=body,
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=5) as response:
        assert response.status == 200


def test_alertmanager_holds_back_each_promql_alert_while_its_daemon_side_twin_fires(
    prometheus_stack: Stack,
) -> None:
    """With both families loaded, the shipped Alertmanager example inhibits each PromQL alert by
    its daemon-side twin for the same labels (one page per incident), and not one for another
    key alias."""
    stack = prometheus_stack
    severity = {
        r["alert"]: r.get("labels", {}).get("severity", "warning") for r in alerting_rules()
    }
    severity["ApigeeTLSClientCertificateRejected"] = "page"
    twins = []
    for rule in yaml.safe_load(ALERTMANAGER_YML.read_text())["inhibit_rules"][1:]:
        [source], [target] = rule["source_matchers"], rule["target_matchers"]
        twins.append((source.split('"')[1], target.split('"')[1]))
    assert len(twins) == 4
    common = {
        "org": "inhibition-test",
        "env": "prod",
        "target": "twins.example:443",
        "key_alias": "twin-client",
        "reason": "bad_certificate",
        "instance": "mp9:9847",
        "team": "apigee",
    }
    alerts = []
    for n, (source, target) in enumerate(twins):
        # a target of its own per pair: the page -> warning rule stays out of the way
        labels = {**common, "target": f"twin{n}.example:443"} if n else common
        alerts.append({**labels, "alertname": source, "severity": severity[source]})
        alerts.append({**labels, "alertname": target, "severity": severity[target]})
    other = {
        **common,
        "key_alias": "other-client",
        "alertname": "ApigeeTLSClientCertificateRejectedRate",
    }
    alerts.append({**other, "severity": "page"})
    post_alerts(stack, alerts)

    def inhibited() -> dict[str, bool]:
        found = {}
        for alert in get_json(f"{stack.alertmanager_url}/api/v2/alerts"):
            labels = alert["labels"]
            if labels.get("org") == "inhibition-test":
                key = labels["alertname"] + (
                    "/other" if labels["key_alias"] != "twin-client" else ""
                )
                found[key] = bool(alert["status"]["inhibitedBy"])
        return found if len(found) == 9 and any(found.values()) else {}

    state = poll(inhibited, 20, "the posted alerts in Alertmanager")
    assert state == {
        **{source: False for source, _ in twins},
        **{target: True for _, target in twins},
        "ApigeeTLSClientCertificateRejectedRate/other": False,
    }
