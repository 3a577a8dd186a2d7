"""Config validation: each broken file in tests/configs/bad names its problem at the
right LINE:COL, through the real CLI (exit 2, one line per problem, no traceback)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from pymon.loader import load_config
from pymon.model.config import ConfigError, parse_config

BAD = Path(__file__).parents[1] / "configs" / "bad"
CASES = sorted(p.stem for p in BAD.glob("*.yaml"))


def pymon(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "pymon", *args], capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize("case", CASES)
def test_bad_config_is_located(case: str) -> None:
    pos, msg = (BAD / f"{case}.expect").read_text().strip().split(" ", 1)
    r = pymon("check-config", "-c", str(BAD / f"{case}.yaml"))
    assert r.returncode == 2, r.stdout + r.stderr
    assert "Traceback" not in r.stderr
    first = r.stderr.splitlines()[0]
    assert first.startswith(f"{BAD / case}.yaml:{pos}: "), r.stderr
    assert msg in first


def test_all_problems_reported_at_once(tmp_path: Path) -> None:
    cfg = tmp_path / "many.yaml"
    cfg.write_text("globals:\n  maxprocs: x\n  bogus: 1\nhostgroups:\n  a: [h]\nwatch:\n"
                   "  b:\n    s:\n      monitor: nothing-here\n      interval: soon\n")
    r = pymon("check-config", "-c", str(cfg))
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    # shape problems come together; names are resolved once the shape is right
    assert len(lines) == 3, r.stderr
    assert [ln.split(":")[1] for ln in lines] == ["2", "3", "10"]
    r2 = pymon("check-config", "-c", str(cfg))
    assert r2.stderr == r.stderr


def test_missing_file() -> None:
    r = pymon("check-config", "-c", "/nonexistent/pymon.yaml")
    assert r.returncode == 2
    assert r.stderr.startswith("/nonexistent/pymon.yaml:1:1: cannot read config")


def test_example_config_is_valid() -> None:
    r = pymon("check-config", "-c", str(Path(__file__).parents[2] / "etc" / "pymon.yaml"))
    assert r.returncode == 0, r.stderr


def test_schema_is_json_schema_and_accepts_the_example() -> None:
    import jsonschema
    import yaml

    r = pymon("schema")
    schema = json.loads(r.stdout)
    jsonschema.Draft202012Validator.check_schema(schema)
    example = yaml.safe_load((Path(__file__).parents[2] / "etc" / "pymon.yaml").read_text())
    jsonschema.validate(example, schema)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({"watch": {"g": {"s": {"interval": "1s"}}}}, schema)


def test_version() -> None:
    r = pymon("--version")
    assert r.returncode == 0 and r.stdout.startswith("pymon ")


def test_a_key_with_a_newline_is_quoted_in_its_one_line_error() -> None:
    """Found by test_fuzz: the path of a problem named the key raw, newline and all."""
    with pytest.raises(ConfigError) as e:
        parse_config("hostgroups:\n  ? '\n\n    '\n  : null\n", "f.yaml")
    assert e.value.problems == ["f.yaml:5:5: hostgroups.'\\n': expected array, got NoneType None"]


# --- read in a forked child (forked.py) ---------------------------------------------------


def test_the_forked_reader_gives_the_config_read_here(tmp_path: Path) -> None:
    from pymon.loader import load_all

    cfg_file = tmp_path / "pymon.yaml"
    cfg_file.write_text(f"""globals: {{mondir: {tmp_path}, alertdir: {tmp_path}, statedir: {tmp_path}}}
hostgroups: {{a: [127.0.0.1], b: [127.0.0.2]}}
watch:
  a: {{web: {{monitor: {{name: http, port: 80}}, interval: 5s, periods: [{{alert: [log], alertevery: 1h}}]}}}}
  b: {{web: {{monitor: {{name: http, port: 80}}, interval: 5s, periods: [{{alert: [log], alertevery: 1h}}]}}}}
""")
    cfg, plugins = load_all(str(cfg_file))
    assert cfg == load_config(cfg_file)
    assert plugins.monitor("http") is not None
    a, b = cfg.services[("a", "web")], cfg.services[("b", "web")]
    assert a.periods[0] is b.periods[0] and a.monitor is b.monitor  # equal specs held once


def test_a_plugin_that_kills_the_reader_is_a_config_error(tmp_path: Path) -> None:
    """The file and the plugins it names are first read in a child: one that ends its
    process there costs a one-line config error, and the caller (the daemon, keeping its
    running config on a reload) goes on."""
    from pymon.loader import load_all

    (tmp_path / "killer.py").write_text("import os, signal\nos.kill(os.getpid(), signal.SIGKILL)\n")
    cfg_file = tmp_path / "pymon.yaml"
    cfg_file.write_text(f"globals: {{mondir: {tmp_path}, alertdir: {tmp_path}, statedir: {tmp_path}}}\n"
                        "hostgroups: {g: [127.0.0.1]}\nwatch: {g: {s: {monitor: {name: tcp, port: 1}}}}\n")
    with pytest.raises(ConfigError) as e:
        load_all(str(cfg_file))
    assert e.value.problems == [f"{cfg_file}:1:1: cannot read config: the child process ended without an "
                                "answer (killed by signal 9)"]


def test_check_config_warns_about_missing_configured_dirs(tmp_path: Path) -> None:
    """Valid, exit 0, but a path that is not there is said in one line on stderr."""
    (tmp_path / "mon").mkdir()
    cfg = tmp_path / "p.yaml"
    cfg.write_text(f"globals: {{mondir: [{tmp_path}/mon, {tmp_path}/nope], alertdir: {tmp_path}/gone, "
                   f"statedir: {tmp_path}/state}}\nhostgroups: {{a: [h]}}\n"
                   "watch: {a: {s: {monitor: {name: tcp, port: 1}}}}\n")
    r = pymon("check-config", "-c", str(cfg))
    assert r.returncode == 0, r.stderr
    assert r.stderr == (f"{cfg}: warning: configured directories do not exist: mondir {tmp_path}/nope, "
                        f"alertdir {tmp_path}/gone, statedir {tmp_path}/state\n")
    for d in ("nope", "gone", "state"):
        (tmp_path / d).mkdir()
    r = pymon("check-config", "-c", str(cfg))
    assert r.returncode == 0 and r.stderr == "", r.stderr
