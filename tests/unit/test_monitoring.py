"""The monitoring files: scrape configs and alert rules pass `promtool check`, and the rules behave as
tests/data/etcdforge-rules.test.yml says under `promtool test rules`; the exporter's unit is sound."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import yaml

from etcdforge import monitoring
from etcdforge.spec import load_spec_text
from etcdforge.verbs.up.plan import new_local_spec
from tests.support import need_promtool

DATA = Path(__file__).resolve().parents[1] / "data"
LOCAL = new_local_spec(members=3, name="c", etcd_binary=None, is_free=lambda ip, port: True, token="c-1")


def promtool(*args: str, cwd: Path) -> str:
    tool = need_promtool()
    done = subprocess.run([tool, *args], cwd=cwd, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, f"promtool {' '.join(args)}:\n{done.stdout}\n{done.stderr}"
    return done.stdout


def write(directory: Path, name: str, data: bytes) -> Path:
    path = directory / name
    path.write_bytes(data)
    return path


def test_rules_pass_promtool_check_and_unit_tests(tmp_path: Path) -> None:
    write(tmp_path, "etcdforge-rules.yml", monitoring.alert_rules())
    out = promtool("check", "rules", "etcdforge-rules.yml", cwd=tmp_path)
    assert "SUCCESS: 23 rules found" in out
    shutil.copy(DATA / "etcdforge-rules.test.yml", tmp_path)
    promtool("test", "rules", "etcdforge-rules.test.yml", cwd=tmp_path)


def test_local_scrape_config_scrapes_every_member_and_the_exporter(tmp_path: Path) -> None:
    write(tmp_path, "etcdforge-rules.yml", monitoring.alert_rules())
    config = monitoring.scrape_config(LOCAL, "127.0.0.1:9479", rules_file="etcdforge-rules.yml")
    write(tmp_path, "prometheus.yml", config)
    promtool("check", "config", "prometheus.yml", cwd=tmp_path)
    jobs = {j["job_name"]: j for j in yaml.safe_load(config)["scrape_configs"]}
    targets = [(c["targets"], c["labels"]["member"]) for c in jobs["etcd"]["static_configs"]]
    assert targets == [
        (["127.0.0.1:2381"], "etcd1"),
        (["127.0.0.2:2381"], "etcd2"),
        (["127.0.0.3:2381"], "etcd3"),
    ]
    assert jobs["etcdforge"]["static_configs"][0]["targets"] == ["127.0.0.1:9479"]


HOSTS_SPEC = """\
name: prod
mode: hosts
token: prod-1
members:
  - {name: etcd1, address: 10.0.0.1}
  - {name: etcd2, address: 10.0.0.2}
  - {name: etcd3, address: 10.0.0.3}
"""


def test_hosts_get_an_agent_each_on_their_own_loopback(tmp_path: Path) -> None:
    spec = load_spec_text(HOSTS_SPEC)
    central = monitoring.scrape_config(spec, "10.0.0.9:9479")
    assert [j["job_name"] for j in yaml.safe_load(central)["scrape_configs"]] == ["etcdforge"]
    agent = monitoring.agent_config(spec, spec.members[1], "http://10.0.0.9:9090/api/v1/write")
    write(tmp_path, "agent.yml", agent)
    promtool("check", "config", "--agent", "agent.yml", cwd=tmp_path)
    loaded = yaml.safe_load(agent)
    (static,) = loaded["scrape_configs"][0]["static_configs"]
    assert static == {"targets": ["127.0.0.1:2381"], "labels": {"cluster": "prod", "member": "etcd2"}}
    assert loaded["remote_write"] == [{"url": "http://10.0.0.9:9090/api/v1/write"}]


def test_no_metrics_port_no_etcd_targets() -> None:
    spec = load_spec_text(HOSTS_SPEC.replace("mode: hosts", "mode: hosts\netcd: {metrics_port: null}"))
    agent = yaml.safe_load(monitoring.agent_config(spec, spec.members[0], None))
    assert agent["scrape_configs"][0]["static_configs"] == []


def test_exporter_unit(tmp_path: Path) -> None:
    unit = monitoring.exporter_unit(
        ("/usr/local/bin/etcdforge",), "/srv/etcd 100%", "127.0.0.1:9479"
    ).decode()
    want = 'ExecStart=/usr/local/bin/etcdforge exporter --dir "/srv/etcd 100%%" --listen 127.0.0.1:9479'
    assert want in unit
    assert "ProtectSystem=strict" in unit and "\nRestart=on-failure\n" in unit
    # without etcdforge on PATH: the interpreter and -m etcdforge, each its own argument; systemd agrees
    module = monitoring.exporter_unit((sys.executable, "-m", "etcdforge"), str(tmp_path), "127.0.0.1:9479")
    assert f"ExecStart={sys.executable} -m etcdforge exporter --dir {tmp_path} " in module.decode()
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        return
    path = write(tmp_path, "etcdforge-exporter.service", module)
    done = subprocess.run([analyze, "verify", str(path)], capture_output=True, text=True, timeout=60)
    assert "etcdforge-exporter.service" not in done.stderr, done.stderr
