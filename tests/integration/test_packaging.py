"""The sdist and wheel carry what a director needs besides the code, and `pymon demo` and
`pymon check-config` work from an installed wheel (no checkout around)."""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tarfile
import time
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
DATA = ["etc/pymon.yaml", "etc/director.yaml", "etc/ha/pymon.yaml", "systemd/pymon.service",
        "systemd/pymon.sysusers", "monitors/pgsql.py", "alerts/chat.py"]


@pytest.fixture(scope="module")
def dist(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`python -m build` of a copy of the tree: the sdist, then the wheel built from it."""
    if not shutil.which("git"):
        pytest.skip("git not found: the files to package are the ones git knows")
    top = tmp_path_factory.mktemp("pkg")
    src = top / "src"
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=REPO,
                           capture_output=True, check=True).stdout.decode().split("\0")
    for f in filter(None, files):
        if (REPO / f).is_file():
            (src / f).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / f, src / f)
    r = subprocess.run([sys.executable, "-m", "build", "--outdir", str(top / "dist"), str(src)],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    return top / "dist"


@pytest.fixture(scope="module")
def venv(dist: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A venv with the wheel; dependencies from the system site (no index needed)."""
    v = tmp_path_factory.mktemp("venv")
    subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", str(v)], check=True)
    wheel = next(dist.glob("pymon-*.whl"))
    subprocess.run([str(v / "bin" / "pip"), "install", "-q", "--no-deps", "--no-index", "--ignore-installed", str(wheel)],
                   check=True, timeout=300)
    return v


def _installed(v: Path) -> Path:
    out = subprocess.run([str(v / "bin" / "python"), "-c", "import pymon; print(pymon.__file__)"],
                         capture_output=True, text=True, check=True, env=_clean_env(), cwd=v).stdout
    return Path(out.strip()).parent


def _clean_env() -> dict[str, str]:
    """No PYTHONPATH: the installed package, not the checkout's src/, is under test."""
    return {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "JOURNAL_STREAM")}


def test_sdist_and_wheel_carry_configs_unit_and_dropins(dist: Path) -> None:
    sdist = next(dist.glob("pymon-*.tar.gz"))
    with tarfile.open(sdist) as t:
        names = {n.split("/", 1)[1] for n in t.getnames() if "/" in n}
    assert set(DATA) <= names, sorted(set(DATA) - names)
    wheel = next(dist.glob("pymon-*.whl"))
    with zipfile.ZipFile(wheel) as z:
        wnames = set(z.namelist())
    want = {f"pymon/data/{f}" for f in DATA} | {"pymon/ops/web/status.html"}
    assert want <= wnames, sorted(want - wnames)


def test_installed_pymon_finds_its_data_not_a_checkout(venv: Path) -> None:
    pkg = _installed(venv)
    assert pkg.is_relative_to(venv), pkg
    assert (pkg / "data" / "systemd" / "pymon.service").is_file()


def test_check_config_on_the_installed_director_template(venv: Path, tmp_path: Path) -> None:
    tmpl = _installed(venv) / "data" / "etc" / "director.yaml"
    r = subprocess.run([str(venv / "bin" / "pymon"), "check-config", "-c", str(tmpl)],
                       capture_output=True, text=True, env=_clean_env(), cwd=tmp_path, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout == f"{tmpl}: OK (1 hostgroups, 1 services)\n"
    if not Path("/etc/pymon/monitors").is_dir():  # this machine is no director: one warning line
        assert r.stderr == (f"{tmpl}: warning: configured directories do not exist: "
                            "mondir /etc/pymon/monitors, alertdir /etc/pymon/alerts\n")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _demo(cmd: list[str], cwd: Path, seconds: float, env: dict[str, str]) -> tuple[list[dict], str, int]:
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=cwd, env=env)
    time.sleep(seconds)
    proc.terminate()
    out, err = proc.communicate(timeout=30)
    return [json.loads(ln) for ln in out.splitlines() if ln.startswith("{")], err, proc.returncode


def test_demo_runs_from_the_installed_wheel(venv: Path, tmp_path: Path) -> None:
    """No etc/ in the working directory: the bundled demo config, its state outside
    site-packages, the three backends checked."""
    events, err, _ = _demo([str(venv / "bin" / "pymon"), "demo"], tmp_path, 12, _clean_env())
    started = [e for e in events if e["event"] == "demo.started"]
    assert started, err[-2000:]
    cfg = Path(started[0]["config"])
    assert not cfg.is_relative_to(venv), cfg
    up = {e["host"] for e in events if e["event"] == "host.state" and e["state"] == "up"}
    assert up == {"127.0.0.11", "127.0.0.12", "127.0.0.13"}, (events, err[-2000:])
    assert any(e["event"] == "daemon.ready" for e in events)
    assert not list(venv.rglob("state.json")), "the demo wrote its state into the venv"


def _config_with(tmp_path: Path, port: int, hosts: list[str]) -> Path:
    text = (REPO / "etc" / "pymon.yaml").read_text()
    text = re.sub(r"^  control_port:.*\n", "", text.replace("18080", str(port)), flags=re.M)
    for old, new in zip(["127.0.0.11", "127.0.0.12", "127.0.0.13"], hosts):
        text = text.replace(old, new)
    (tmp_path / "etc").mkdir(exist_ok=True)
    cfg = tmp_path / "etc" / "pymon.yaml"
    cfg.write_text(text)
    return cfg


def test_demo_backends_come_from_the_config(tmp_path: Path) -> None:
    port = _free_port()
    cfg = _config_with(tmp_path, port, ["127.0.0.21", "127.0.0.22", "127.0.0.23"])
    events, err, _ = _demo([sys.executable, "-m", "pymon", "demo", "-c", str(cfg)], tmp_path, 10, dict(os.environ))
    started = next((e for e in events if e["event"] == "demo.started"), None)
    assert started and started["backends"] == [f"127.0.0.2{i}:{port}" for i in (1, 2, 3)], (events, err[-2000:])
    up = {e["host"] for e in events if e["event"] == "host.state" and e["state"] == "up"}
    assert up == {"127.0.0.21", "127.0.0.22", "127.0.0.23"}, events


def test_demo_port_taken_is_one_line(tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.22", 0))
        s.listen()
        port = s.getsockname()[1]
        cfg = _config_with(tmp_path, port, ["127.0.0.21", "127.0.0.22", "127.0.0.23"])
        r = subprocess.run([sys.executable, "-m", "pymon", "demo", "-c", str(cfg)],
                           capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert r.returncode != 0
    assert r.stderr.count("\n") == 1 and "Traceback" not in r.stderr, r.stderr
    assert r.stderr.startswith(f"pymon demo: cannot listen on 127.0.0.22:{port} for a demo backend: "), r.stderr
