"""mon.cf migration (moncf.py): Debian's examples convert and validate, malformed files
are located as FILE:LINE like real mon locates them, the blank-line rule, m4, lvs.alert,
and a differential run: Debian's mon and pymon on the same mon.cf, same monitor and
alert scripts, same backend going down and up; the alert sequences must match."""

from __future__ import annotations

import gzip
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import yaml

from pymon.mon import moncf
from pymon.model.config import ConfigError

HERE = Path(__file__).parents[1] / "moncf"
BAD = HERE / "bad"
EXAMPLES = Path("/usr/share/doc/mon/examples")
MON = "/usr/sbin/mon"
MON_CONFIGS = ["very-simple.cf", "example.cf.gz", "example.m4.gz"]
have_mon = pytest.mark.skipif(not os.access(MON, os.X_OK), reason="Debian's mon is not installed")
have_m4 = pytest.mark.skipif(shutil.which("m4") is None, reason="m4 is not installed")


def pymon(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "pymon", *args], capture_output=True, text=True, timeout=60,
                          env={**os.environ, **(env or {})})


def cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    """The real CLI in-process (a subprocess per call would cost a second of imports)."""
    from pymon.cli import main

    rc = main(list(args))
    out, err = capsys.readouterr()
    return rc, out, err


def example(tmp: Path, name: str) -> Path:
    """An example from /usr/share/doc/mon/examples, gunzipped into tmp."""
    src = EXAMPLES / name
    dst = tmp / name.removesuffix(".gz")
    dst.write_bytes(gzip.decompress(src.read_bytes()) if name.endswith(".gz") else src.read_bytes())
    return dst


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def mon_verdicts(cfs: list[Path], tmp: Path, wait: float = 4.0) -> dict[Path, tuple[bool, str]]:
    """Real mon on each config, all at once: {cf: (accepted, stderr)}. A rejected file
    makes mon exit at once with `cf error: ..., line N`; an accepted one keeps running
    (killed after `wait` seconds)."""
    procs = {}
    for i, cf in enumerate(cfs):
        state = tmp / f"monstate-{i}"
        state.mkdir(exist_ok=True)
        procs[cf] = subprocess.Popen(
            [MON, "-c", str(cf), "-L", str(state), "-D", str(state), "-P", str(state / "pid"),
             "-p", str(free_port()), "-t", str(free_port())],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, start_new_session=True)
    deadline = time.monotonic() + wait
    out = {}
    for cf, p in procs.items():
        try:
            _, err = p.communicate(timeout=max(0.1, deadline - time.monotonic()))
            out[cf] = (False, err)
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)
            out[cf] = (True, p.communicate()[1])
    return out


# -- Debian's examples -------------------------------------------------------------


@have_mon
@pytest.mark.parametrize("name", MON_CONFIGS)
def test_debian_examples_convert_and_validate(tmp_path: Path, name: str,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    if name.endswith(".m4.gz") and shutil.which("m4") is None:
        pytest.skip("m4 is not installed")
    cf = example(tmp_path, name)
    rc, yaml_text, err = cli(capsys, "import-mon", str(cf))
    assert rc == 0, err
    out = tmp_path / "pymon.yaml"
    out.write_text(yaml_text)
    # every item names its source line (structural keys like `periods:` aside)
    for ln in yaml_text.splitlines():
        code = ln.split("  #", 1)[0].rstrip()
        if code and not code.lstrip().startswith("#") and not code.endswith(":"):
            assert f"# {cf.name}:" in ln or "mon's default" in ln, ln
    rc, v, err = cli(capsys, "check-config", "-c", str(out))
    assert rc == 0, err
    # the mon.cf itself is accepted directly, with the same result
    rc, d, err = cli(capsys, "check-config", "-c", str(cf))
    assert rc == 0, err
    assert d.split(": ", 1)[1] == v.split(": ", 1)[1]
    rc, check, _ = cli(capsys, "import-mon", "--check", str(cf))
    assert rc == 1 and check.startswith(f"{cf}:"), check


@have_mon
def test_example_cf_conversion_details(tmp_path: Path) -> None:
    conv = moncf.import_text(example(tmp_path, "example.cf.gz").read_text(), str(tmp_path / "example.cf"))
    w = conv.data["watch"]
    assert conv.data["globals"]["dep_behavior"] == "a"  # mon's default, not pymon's
    assert w["serversbd1"]["ping"]["monitor"] == "fping -r 3 -t 2000"  # native, the script's defaults
    assert w["netapps"]["freespace"]["monitor"] == "freespace /f330:5000 /f540:5000"
    assert w["mailhost"]["smtp"]["monitor"] == "smtp.monitor"  # legacy script
    assert w["dialin"]["555-1212"]["monitor"] == "dialin.monitor.wrap -n 555-1212 -t 80 ;;"
    assert w["serversbd2"]["telnet"]["depend"] == ["routers:ping", "serversbd2:ping"]
    assert "fping" not in w["mailhost"]  # no monitor, no interval: mon never runs it
    assert "telnet" not in w["wwwservers"]  # no interval
    assert conv.data["hostgroups"]["news"] == ["news"]  # mon's implicit group
    notes = dict(conv.notes)
    assert "page.alert" in notes[74] and "no interval" in notes[169]
    assert conv.lines[("watch", "serversbd1", "ping", "interval")] == 70
    per = w["serversbd1"]["ping"]["periods"]
    assert [p["period"] for p in per] == ["wd {Mon-Fri} hr {7am-10pm}"] * 2 + ["wd {Sat-Sun}"]


@have_mon
def test_every_example_file_is_judged_like_mon(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Every *.cf there (most are configs of other tools): pymon accepts exactly what
    mon accepts, and rejects the rest at the line mon names."""
    cfs = [example(tmp_path, p.name) for p in sorted(EXAMPLES.glob("*.cf*")) if p.name != "mon.cgi.cf.gz"]
    assert len(cfs) >= 3
    for cf, (accepted, err) in mon_verdicts(cfs, tmp_path).items():
        rc, _, perr = cli(capsys, "check-config", "-c", str(cf))
        if accepted or "cf error" not in err:  # example.cf's cfbasedir has no auth.cf here: mon stops after parsing
            assert rc == 0, (cf, perr)
        else:
            assert rc == 2, (cf, err)
            line = err.strip().rsplit("line ", 1)[1]
            assert perr.startswith(f"{cf}:{line}: "), (err, perr)


# -- malformed files: FILE:LINE, never a traceback, at mon's line -----------------

CASES = sorted(p.stem for p in BAD.glob("*.cf"))


@pytest.mark.parametrize("case", CASES)
def test_malformed_moncf_is_located(case: str, capsys: pytest.CaptureFixture[str]) -> None:
    line, msg = (BAD / f"{case}.expect").read_text().strip().split(" ", 1)
    cf = BAD / f"{case}.cf"
    for args in (("check-config", "-c", str(cf)), ("import-mon", str(cf)), ("import-mon", "--check", str(cf))):
        rc, out, err = cli(capsys, *args)
        assert rc == 2, out + err
        first = err.splitlines()[0]
        assert first.startswith(f"{cf}:{line}: "), err
        assert msg in first, err


def test_no_traceback_through_the_real_command(tmp_path: Path) -> None:
    r = pymon("run", "-c", str(BAD / "bad_interval.cf"))
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert r.stderr.startswith(f"{BAD / 'bad_interval.cf'}:5: invalid interval '5x'"), r.stderr


@have_mon
def test_mon_rejects_the_same_files_at_the_same_lines(tmp_path: Path) -> None:
    """The corpus checked against the oracle: real mon rejects each at the same line."""
    verdicts = mon_verdicts([BAD / f"{case}.cf" for case in CASES], tmp_path, wait=20)
    for cf, (accepted, err) in verdicts.items():
        line = cf.with_suffix(".expect").read_text().split(" ", 1)[0]
        assert not accepted and "cf error" in err, (cf.name, err)
        assert err.strip().endswith(f"line {line}"), (cf.name, err)


def test_error_lines_are_ordered_and_all_reported(tmp_path: Path) -> None:
    cf = tmp_path / "many.cf"
    cf.write_text("hostgroup g h\n\nwatch g\n    service a\n        interval 5\n        monitor x.monitor\n"
                  "        period wd {Nope}\n    service a\n")
    with pytest.raises(ConfigError) as e:
        moncf.parse(cf.read_text(), str(cf))
    assert [p.split(":")[1] for p in e.value.problems] == ["5", "7", "8"]


def test_unreadable_and_binary_files(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc, _, err = cli(capsys, "import-mon", str(tmp_path / "missing.cf"))
    assert rc == 2 and err.startswith(f"{tmp_path / 'missing.cf'}:1: cannot read")
    b = tmp_path / "bin.cf"
    b.write_bytes(b"\xff\xfe\x00garbage")
    rc, _, err = cli(capsys, "check-config", "-c", str(b))
    assert rc == 2 and err.startswith(f"{b}:1")


# -- the reader: comments, continuations -------------------------------------------


def test_continuations_and_comments_as_mon_reads_them() -> None:
    text = ("hostgroup web a \\\n    b\\\n# a comment inside the continuation\n  c\n\n"
            "watch web\n    service http\n        interval 1m\n        monitor http.monitor \\\n"
            "            -p 8080 -u /health\n")
    cf = moncf.parse(text, "x.cf")
    # leading whitespace of a continued line goes, the backslash's own text stays as written: `b\` + `c` = `bc`
    assert cf.hostgroups["web"] == (["a", "bc"], 1)
    assert cf.watches["web"].services["http"].opts["monitor"] == ("http.monitor -p 8080 -u /health", 9)


def test_trailing_hash_is_not_a_comment_in_mon() -> None:
    cf = moncf.parse("hostgroup g h # not a comment\n", "x.cf")
    assert cf.hostgroups["g"][0] == ["h", "#", "not", "a", "comment"]


# -- the blank-line rule ------------------------------------------------------------

SWALLOWED = """\
hostgroup web 127.0.0.1
watch web
    service tcp
        interval 1m
        monitor tcp.monitor -p 80
        period wd {Sun-Sat}
            alert mail.alert root
"""


@have_mon
def test_blank_line_rule_is_reported_and_converted(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cf = tmp_path / "swallow.cf"
    cf.write_text(SWALLOWED)
    # the oracle: mon reads the watch block as hostnames and so has no watch for web
    accepted, err = mon_verdicts([cf], tmp_path)[cf]
    assert accepted and "hostgroup web has no watch assigned to it" in err
    rc, out, err = cli(capsys, "import-mon", str(cf))
    assert rc == 0, err
    assert err.startswith(f"{cf}:2: warning: no blank line ends hostgroup web"), err
    data = yaml.safe_load(out)
    assert data["hostgroups"]["web"] == ["127.0.0.1"]
    assert data["watch"]["web"]["tcp"]["monitor"] == "tcp -p 80"
    rc, out, _ = cli(capsys, "import-mon", "--check", str(cf))
    assert rc == 1 and f"{cf}:2: warning: no blank line" in out


def test_lines_after_a_blank_line_inside_a_watch() -> None:
    text = ("hostgroup g h\n\nwatch g\n    service a\n        interval 1m\n        monitor tcp.monitor -p 1\n\n"
            "    service b\n        interval 1m\n        monitor tcp.monitor -p 2\n\nbogus line here\n")
    cf = moncf.parse(text, "x.cf")
    assert list(cf.watches["g"].services) == ["a", "b"]
    msgs = dict(cf.warnings)
    assert "mon ignores this line: the blank line at line 7 ended watch g" in msgs[8]
    assert "mon ignores this line (it is outside any hostgroup or watch record)" in msgs[12]


# -- m4 ---------------------------------------------------------------------------


@have_m4
def test_m4_file_is_expanded_and_lines_map_back(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cf = tmp_path / "mon.m4"
    cf.write_text("dnl macros\ndefine(_PORT_, `8080')dnl\ndefine(_WHO_, `ops@example.com')dnl\n"
                  "hostgroup web 127.0.0.1\n\nwatch web\n    service http\n        interval 1m\n"
                  "        monitor http.monitor -p _PORT_\n        period wd {Sun-Sat}\n"
                  "            alert mail.alert _WHO_\n            alertevery bad\n")
    with pytest.raises(ConfigError) as e:
        moncf.import_text(cf.read_text(), str(cf))
    assert e.value.problems[0].startswith(f"{cf}:12: invalid time interval 'bad'")
    cf.write_text(cf.read_text().replace("alertevery bad", "alertevery 1h"))
    conv = moncf.import_text(cf.read_text(), str(cf))
    svc = conv.data["watch"]["web"]["http"]
    assert svc["monitor"] == "http -p 8080"
    assert svc["periods"][0]["alert"] == ["mail.alert ops@example.com"]
    assert conv.lines[("watch", "web", "http", "periods", 0, "alert", 0)] == 11
    rc, _, err = cli(capsys, "check-config", "-c", str(cf))
    assert rc == 0, err


@have_m4
def test_m4_errors_are_located(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cf = tmp_path / "broken.m4"
    cf.write_text("dnl\nhostgroup web h\n\nundefine(\n")
    rc, _, err = cli(capsys, "check-config", "-c", str(cf))
    assert rc == 2 and err.startswith(f"{cf}:4: m4: "), err


def test_first_line_dnl_asks_for_m4() -> None:
    assert moncf.wants_m4("mon.cf", "\ndnl this file is for m4\n")
    assert moncf.wants_m4("x.m4", "")
    assert not moncf.wants_m4("mon.cf", "# plain\nhostgroup a b\n")


# -- keywords ------------------------------------------------------------------------

KEYWORDS = """\
dep_behavior = m
exclude_period = hr {3am-4am}
unack_summary = yes

hostgroup web 10.0.0.1 10.0.0.2
hostgroup db 10.0.1.1

watch db
    service ping
        interval 30s
        monitor fping.monitor -r 2 -t 500
        period wd {Sun-Sat}
            alert mail.alert dba

watch web
    service http
        description front web farm
        interval 10s
        failure_interval 2s
        randskew 1s
        monitor http.monitor -p 8080 -u /health -t 5
        exclude_hosts 10.0.0.2 10.9.9.9
        exclude_period wd {Sat}
        depend SELF:tcp && db:ping
        dep_behavior a
        redistribute file.alert redis.log
        traptimeout 5m
        trapduration 1m
        allow_empty_group
        MY_VAR=some value
        period day: wd {Mon-Fri} hr {9am-5pm}
            alert mail.alert ops@example.com
            alert exit=2-3 mail.alert disk@example.com
            upalert mail.alert ops@example.com
            startupalert mail.alert ops@example.com
            alertevery 1h strict
            alertafter 3 10m
            numalerts 10
            no_comp_alerts
            upalertafter 5m
        period night: wd {Mon-Fri} hr {5pm-9am}
            alert mail.alert night@example.com
            alertevery 30m ignore_summary
            alertafter 10m
            alertexitrange 1-2
        period weekend: wd {Sat-Sun}
            alert mail.alert weekend@example.com
            alertevery 2h summary
            alertafter 2
            ackalert mail.alert acks@example.com
    service tcp
        interval 10s
        monitor tcp.monitor
        monitordepend db:ping
        period
            alert mail.alert ops@example.com
"""


@have_mon
def test_every_keyword(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cf = tmp_path / "mon.cf"
    cf.write_text(f"mondir = /usr/lib/mon/mon.d\nalertdir = /usr/lib/mon/alert.d\n{KEYWORDS}")
    accepted, err = mon_verdicts([cf], tmp_path)[cf]
    assert accepted, err  # mon takes every line of it
    conv = moncf.import_text(cf.read_text(), str(cf))
    g, w = conv.data["globals"], conv.data["watch"]
    assert g["dep_behavior"] == "m"
    http = w["web"]["http"]
    assert http["monitor"] == "http -p 8080 -u /health -t 5"
    assert http["exclude_hosts"] == ["10.0.0.2"]  # 10.9.9.9 is not in the group: mon ignores it too
    assert http["exclude_period"] == "hr {3am-4am}, wd {Sat}"  # global and service, either excludes
    assert http["depend"] == ["web:tcp", "db:ping"] and http["dep_behavior"] == "a"
    assert http["env"] == {"MY_VAR": "some value"}
    assert (http["interval"], http["failure_interval"], http["randskew"]) == ("10s", "2s", "1s")
    day, night, weekend = http["periods"]
    assert day == {"period": "wd {Mon-Fri} hr {9am-5pm}", "alert": ["mail.alert ops@example.com",
                   "exit=2-3 mail.alert disk@example.com"], "upalert": ["mail.alert ops@example.com"],
                   "startupalert": ["mail.alert ops@example.com"], "alertevery": "1h strict",
                   "alertafter": "3 10m", "numalerts": 10, "no_comp_alerts": True}
    assert night["alertevery"] == "30m summary" and night["alertafter"] == "10m"
    assert night["alert"] == ["exit=1-2 mail.alert night@example.com"]  # alertexitrange per alert
    assert weekend["alertevery"] == "2h" and weekend["alertafter"] == 2  # mon's `summary` is a no-op
    tcp = w["web"]["tcp"]
    assert tcp["monitor"] == "tcp -p 23"  # tcp.monitor's default port
    assert tcp["depend"] == ["db:ping"] and "dep_behavior" not in tcp  # monitordepend = depend with m
    assert "period" not in tcp["periods"][0]  # an empty period is always
    notes = " | ".join(m for _, m in conv.notes)
    for word in ("redistribute", "traptimeout", "trapduration", "allow_empty_group", "upalertafter",
                 "ackalert", "unack_summary"):
        assert word in notes, word
    warnings = " | ".join(m for _, m in conv.warnings)
    assert "'summary' is a no-op" in warnings and "exclude_hosts: '10.9.9.9'" in warnings
    yaml_text, _ = moncf.to_yaml(conv)
    out = tmp_path / "pymon.yaml"
    out.write_text(yaml_text)
    rc, _, err = cli(capsys, "check-config", "-c", str(out))
    assert rc == 0, err + yaml_text
    assert yaml.safe_load(yaml_text) == conv.data


def test_legacy_monitors_option(tmp_path: Path) -> None:
    cf = tmp_path / "mon.cf"
    cf.write_text("mondir = /usr/lib/mon/mon.d\nhostgroup g 127.0.0.1\n\nwatch g\n    service s\n"
                  "        interval 1m\n        monitor http.monitor -p 80\n")
    conv = moncf.convert(moncf.parse(cf.read_text(), str(cf)), native=False)
    assert conv.data["watch"]["g"]["s"]["monitor"] == "http.monitor -p 80"
    conv = moncf.convert(moncf.parse(cf.read_text().replace("-p 80", "-z"), str(cf)))
    if os.path.exists("/usr/lib/mon/mon.d/http.monitor"):  # the native probe rejects -z: the script stays
        assert conv.data["watch"]["g"]["s"]["monitor"] == "http.monitor -z"


def test_absent_script_dirs_still_convert(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """mon starts on a file whose alertdir/mondir is not on this machine: import-mon writes
    the YAML with every name and lists what it could not find; run/check-config refuse and
    say which dir was searched and how to point it elsewhere."""
    cf = tmp_path / "a.cf"
    cf.write_text(f"alertdir = {tmp_path}/no/alert.d\nmondir = {tmp_path}/no/mon.d\nhostgroup g 127.0.0.1\n\n"
                  "watch g\n    service s\n        interval 1m\n        monitor my.monitor -x\n"
                  "        period wd {Sun-Sat}\n            alert echo.alert x\n            upalert echo.alert y\n")
    rc, out, err = cli(capsys, "import-mon", str(cf))
    assert rc == 0, err
    y = yaml.safe_load(out)
    assert y["watch"]["g"]["s"]["monitor"] == "my.monitor -x"
    assert y["watch"]["g"]["s"]["periods"][0] == {"period": "wd {Sun-Sat}", "alert": ["echo.alert x"],
                                                   "upalert": ["echo.alert y"]}
    assert f"{cf}:8: warning: monitor my.monitor: not found, mondir {tmp_path}/no/mon.d does not exist here" in err
    assert f"{cf}:10: warning: alert echo.alert: not found, alertdir {tmp_path}/no/alert.d" in err
    rc, out, _ = cli(capsys, "import-mon", "--check", str(cf))
    assert rc == 1 and [ln.split(": ")[0] for ln in out.splitlines()] == [f"{cf}:8", f"{cf}:10", f"{cf}:11"]
    rc, _, err = cli(capsys, "check-config", "-c", str(cf))
    assert rc == 2
    assert (f"{cf}:10: unknown alert 'echo.alert': not built in and not in alertdir {tmp_path}/no/alert.d "
            f"({tmp_path}/no/alert.d does not exist here); point alertdir ({cf}:1) at the directory") in err
    # once the dirs are there, the converted YAML is the config check-config takes
    for d in ("alert.d", "mon.d"):
        (tmp_path / "no" / d).mkdir(parents=True)
    for f in ("alert.d/echo.alert", "mon.d/my.monitor"):
        (tmp_path / "no" / f).write_text("#!/bin/sh\n")
        (tmp_path / "no" / f).chmod(0o755)
    rc, _, err = cli(capsys, "check-config", "-c", str(cf))
    assert rc == 0, err


@pytest.mark.skipif(not os.path.exists("/usr/lib/mon/mon.d/http.monitor"), reason="Debian's mon is not installed")
def test_own_script_under_a_native_name_runs(tmp_path: Path) -> None:
    """A site's own http.monitor in mondir is what mon runs; pymon runs it too (with a
    warning at its line), while Debian's own http.monitor becomes the native probe."""
    (tmp_path / "mon.d").mkdir()
    own = tmp_path / "mon.d" / "http.monitor"
    own.write_text(f"#!/bin/sh\necho \"$@\" >> {tmp_path}/ran\nexit 0\n")
    own.chmod(0o755)
    cf = tmp_path / "mon.cf"
    cf.write_text(f"mondir = {tmp_path}/mon.d:/usr/lib/mon/mon.d\nhostgroup g 127.0.0.1\n\nwatch g\n"
                  "    service web\n        interval 1s\n        monitor http.monitor -p 8\n")
    conv = moncf.import_text(cf.read_text(), str(cf))
    assert conv.data["watch"]["g"]["web"]["monitor"] == "http.monitor -p 8"
    assert any(no == 7 and f"{own} is not the script mon ships: it runs" in m for no, m in conv.warnings)
    py = subprocess.Popen([sys.executable, "-m", "pymon", "run", "-c", str(cf)], stdout=subprocess.DEVNULL,
                          stderr=subprocess.PIPE, env={**os.environ, "STATE_DIRECTORY": str(tmp_path)})
    try:
        deadline = time.monotonic() + 20
        while not (tmp_path / "ran").exists() and time.monotonic() < deadline and py.poll() is None:
            time.sleep(0.2)
    finally:
        py.terminate()
        err = py.communicate(timeout=20)[1].decode()
    assert (tmp_path / "ran").read_text().startswith("-p 8 127.0.0.1"), err
    shutil.copy("/usr/lib/mon/mon.d/http.monitor", own)  # Debian's bytes: the native probe
    conv = moncf.import_text(cf.read_text(), str(cf))
    assert conv.data["watch"]["g"]["web"]["monitor"] == "http -p 8"


@pytest.mark.skipif(not os.path.exists("/usr/lib/mon/mon.d/fping.monitor"), reason="Debian's mon is not installed")
def test_fping_defaults_are_the_scripts(tmp_path: Path) -> None:
    """fping.monitor runs `fping -r 3 -t 2000` unless told otherwise (4 tries, 2 s): the
    native probe converted from it sends as many echoes and waits as long."""
    from pymon.probes import icmp

    script = Path("/usr/lib/mon/mon.d/fping.monitor").read_text()
    assert 'my $TIMEOUT = $opt{"t"} || 2000;' in script and 'my $RETRIES = $opt{"r"} || 3;' in script
    for args, count, wait in (("", 4, 2.0), (" -a", 4, 2.0), (" -r 1 -t 500", 2, 0.5), (" -r 0", 4, 2.0)):
        conv = moncf.import_text(f"hostgroup g 127.0.0.1\n\nwatch g\n    service ping\n        interval 1m\n"
                                 f"        monitor fping.monitor{args}\n", str(tmp_path / "mon.cf"))
        text, _ = moncf.to_yaml(conv)
        svc = moncf.parse_config(text, str(tmp_path / "p.yaml")).services[("g", "ping")]
        assert svc.monitor.name == "fping"
        p = icmp._parse(svc.probe_params)
        assert (p.count, p.wait) == (count, wait), args


def test_lvs_warning_says_what_runs(tmp_path: Path) -> None:
    text = ("hostgroup rs 10.1.0.1\n\nwatch rs\n    service http\n        interval 5s\n"
            "        monitor tcp.monitor -p 80\n        period wd {Mon-Fri}\n"
            "            alert lvs.alert -V 10.0.0.1:80 -R 10.1.0.1\n"
            "            upalert lvs.alert -V 10.0.0.1:80 -R 10.1.0.1\n")
    conv = moncf.import_text(f"alertdir = {tmp_path}\n" + text, str(tmp_path / "mon.cf"))
    assert any("kept as an alert (pymon's built-in lvs alert runs it)" in m for _, m in conv.warnings)
    (tmp_path / "lvs.alert").write_text("#!/bin/sh\n")
    (tmp_path / "lvs.alert").chmod(0o755)
    conv = moncf.import_text(f"alertdir = {tmp_path}\n" + text, str(tmp_path / "mon.cf"))
    assert any(f"kept as an alert ({tmp_path}/lvs.alert runs it, as in mon)" in m for _, m in conv.warnings)
    assert not any("built-in" in m for _, m in conv.warnings)


def test_history_and_downtime_notes_are_true(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    conv = moncf.import_text("histlength = 500\nhistoricfile = /var/log/mon/history.log\ndtlogging = yes\n"
                             "dtlogfile = /var/log/mon/downtime.log\nhostgroup g h\n", str(tmp_path / "mon.cf"))
    notes = dict(conv.notes)
    assert "`pymon history`" in notes[1] and "`pymon history`" in notes[2]
    assert "`pymon downtime`" in notes[3] and "`pymon downtime`" in notes[4]
    assert not any("no alert history" in m or "no downtime log" in m for m in notes.values())
    for cmd in ("history", "downtime"):  # the commands the notes name exist
        with pytest.raises(SystemExit) as e:
            cli(capsys, cmd, "--help")
        assert e.value.code == 0


# -- lvs.alert -> virtual_services ----------------------------------------------------

LVS = """\
alertdir = {tmp}
hostgroup www 192.168.1.11 192.168.1.12
hostgroup rs3 web3

watch www
    service http
        interval 10s
        monitor http.monitor -p 80
        period wd {{Sun-Sat}}
            alert lvs.alert -P tcp-service -V 10.0.0.3:80 -R 192.168.1.11 -W 5 -F dr
            upalert lvs.alert -P tcp-service -V 10.0.0.3:80 -R 192.168.1.11 -W 5 -F dr
            alert lvs.alert -P tcp-service -V 10.0.0.3:80 -R 192.168.1.12 -W 3 -F nat -X quiesce
            upalert lvs.alert -P tcp-service -V 10.0.0.3:80 -R 192.168.1.12 -W 3 -F nat -X quiesce
            alert mail.alert ops

watch rs3
    service http
        interval 10s
        monitor http.monitor -p 80
        period wd {{Mon-Fri}}
            alert lvs.alert -P tcp-service -V 10.0.0.4:80 -R 192.168.1.13 -W 1
            upalert lvs.alert -P tcp-service -V 10.0.0.4:80 -R 192.168.1.13 -W 1
"""


def test_lvs_alerts_become_virtual_services(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "mail.alert").write_text("#!/bin/sh\n")
    (tmp_path / "mail.alert").chmod(0o755)
    cf = tmp_path / "mon.cf"
    cf.write_text(LVS.format(tmp=tmp_path))
    conv = moncf.import_text(cf.read_text(), str(cf))
    vss = conv.data["virtual_services"]
    assert vss == [{"vip": "10.0.0.3:80", "watch": "www:http", "quiescent": True, "real_servers": [
        {"address": "192.168.1.11", "weight": 5, "forwarding": "dr"},
        {"address": "192.168.1.12", "weight": 3, "forwarding": "nat"}]}]
    period = conv.data["watch"]["www"]["http"]["periods"][0]
    assert period["alert"] == ["mail.alert ops"] and "upalert" not in period
    # a weekday-only period cannot be a virtual service: stays an alert for the built-in lvs alert
    assert conv.data["watch"]["rs3"]["http"]["periods"][0]["alert"] == [
        "lvs.alert -P tcp -V 10.0.0.4:80 -R 192.168.1.13 -W 1"]  # -P as the built-in lvs alert spells it
    assert any("kept as an alert" in m for _, m in conv.warnings)
    yaml_text, _ = moncf.to_yaml(conv)
    out = tmp_path / "pymon.yaml"
    out.write_text(yaml_text)
    rc, _, err = cli(capsys, "check-config", "-c", str(out))
    assert rc == 0, err + yaml_text
    assert "# mon.cf:10" in yaml_text


def test_one_vip_fed_by_several_watches_stays_alerts(tmp_path: Path) -> None:
    text = "".join(f"hostgroup rs{i} 10.1.0.{i}\n\nwatch rs{i}\n    service http\n        interval 5s\n"
                   f"        monitor tcp.monitor -p 80\n        period wd {{Sun-Sat}}\n"
                   f"            alert lvs.alert -V 10.0.0.1:80 -R 10.1.0.{i}\n"
                   f"            upalert lvs.alert -V 10.0.0.1:80 -R 10.1.0.{i}\n\n" for i in (1, 2))
    conv = moncf.import_text(text, str(tmp_path / "mon.cf"))
    assert "virtual_services" not in conv.data
    assert sum("fed by several watches" in m for _, m in conv.warnings) == 2


# -- detection and in-memory loading ----------------------------------------------------


def test_detection() -> None:
    assert moncf.is_moncf("/etc/mon/mon.cf", "")
    assert moncf.is_moncf("/etc/mon/monitoring", "# mon\n\nhostgroup a b\n")
    assert moncf.is_moncf("x", "maxprocs = 3\n")
    assert not moncf.is_moncf("pymon.yaml", "globals:\n  maxprocs: 3\n")


def test_yaml_problems_map_back_to_moncf_lines(tmp_path: Path) -> None:
    cf = tmp_path / "mon.cf"
    cf.write_text("hostgroup g h\n\nwatch g\n    service s\n        interval 1m\n        monitor tcp.monitor -p 1\n"
                  "        period wd {Sun-Sat}\n            alert no-such.alert x\n")
    conv = moncf.import_text(cf.read_text(), str(cf))
    # the converter drops what does not exist (where mon's alertdir exists here) ...
    assert not os.path.isdir("/usr/lib/mon/alert.d") or "no-such.alert" in dict(conv.notes)[8]
    # ... and anything pymon's own validation finds names the mon.cf line
    text, lmap = moncf.to_yaml(conv)
    line_of_monitor = next(i for i, ln in enumerate(text.splitlines(), 1) if "monitor:" in ln)
    problems = moncf.translate([f"{cf}:{line_of_monitor}:16: boom"], str(cf), lmap)
    assert problems == [f"{cf}:6: boom"]


# -- the differential test: real mon is the oracle ------------------------------------


class Backend:
    """A loopback TCP listener that can be taken down (connection refused) and up again."""

    def __init__(self, port: int):
        self.port = port
        self.sock: socket.socket | None = None
        self.lock = threading.Lock()

    def up(self) -> None:
        with self.lock:
            s = socket.socket()
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind(("127.0.0.1", self.port))
            s.listen(64)
            self.sock = s
            threading.Thread(target=self._accept, args=(s,), daemon=True).start()

    def _accept(self, s: socket.socket) -> None:
        while True:
            try:
                conn, _ = s.accept()
            except OSError:
                return
            conn.close()

    def down(self) -> None:
        with self.lock:
            if self.sock is not None:
                self.sock.shutdown(socket.SHUT_RDWR)
                self.sock.close()
                self.sock = None


def alerts(path: Path) -> dict[tuple[str, str], list[tuple[str, str, str, str]]]:
    """Per (service, tag), in order: (type, group, service, summary). Alerts of one
    event run concurrently in both daemons, so only each tag's own order is fixed."""
    out: dict[tuple[str, str], list[tuple[str, str, str, str]]] = {}
    if path.exists():
        for ln in path.read_text().splitlines():
            kind, group, svc, tag, summary, _when = ln.split("|", 5)
            out.setdefault((svc, tag), []).append((kind, group, svc, summary))
    return out


TIMES = ("MON_LAST_FAILURE", "MON_FIRST_FAILURE", "MON_LAST_SUCCESS", "MON_FIRST_SUCCESS")


def env_facts(env: dict[str, str], when: int | None, literal: bool) -> dict[str, object]:
    """A script's MON_* environment with what differs by design taken out: epochs become
    their relation to the alert's time (-t) and to each other; without `literal` (pymon's
    native probe there, mon's script) outputs are only empty or not."""
    out: dict[str, object] = {}
    for k, v in env.items():
        if k in ("MON_STATEDIR", "MON_CFBASEDIR"):
            out[k] = "a path"
        elif (k == "MON_FIRST_FAILURE" or k == "MON_LAST_FAILURE" and env.get("MON_ALERTTYPE") == "failure") \
                and v not in ("", "0"):
            # pymon checks every second, mon every ~3: two failures can share a second in pymon;
            # a failure alert's -t is read just after the failure is recorded, in either daemon,
            # so a second can turn between them
            out[k] = "set" if when is None else "at or before -t" if int(v) <= when else "after"
        elif k in TIMES and v not in ("", "0"):
            out[k] = "set" if when is None else "at -t" if int(v) == when else "before -t" if int(v) < when else "after"
        elif k in ("MON_LAST_OUTPUT",) and not literal:
            out[k] = "text" if v else v
        else:
            out[k] = v
    ff, lf, ls = (int(env.get(k) or 0) for k in ("MON_FIRST_FAILURE", "MON_LAST_FAILURE", "MON_LAST_SUCCESS"))
    if ff and lf:
        out["first <= last failure"] = ff <= lf
    if ff and ls:
        out["last success before first failure"] = ls < ff
    return out


def alert_records(path: Path) -> dict[tuple[str, str], list[dict[str, object]]]:
    """Per (service, tag), in order: argv (-t as T), environment facts and stdin."""
    out: dict[tuple[str, str], list[dict[str, object]]] = {}
    if not path.exists():
        return out
    for ln in path.read_text().splitlines():
        r = json.loads(ln)
        argv = r["argv"]
        when = int(argv[argv.index("-t") + 1])
        svc, tag = argv[argv.index("-s") + 1], argv[-1]
        literal = svc == "script"
        out.setdefault((svc, tag), []).append({
            "argv": [("T" if i and argv[i - 1] == "-t" else a) for i, a in enumerate(argv)],
            "env": env_facts(r["env"], when, literal),
            "stdin": r["stdin"] if literal else bool(r["stdin"])})
    return out


def side_by_side(tmp: Path, cf: Path, monitor_log: bool = False,
                 log_to_state: bool = False) -> tuple[subprocess.Popen[bytes], subprocess.Popen[bytes]]:
    """The real mon and pymon on the same mon.cf, each in its own session with its state
    under tmp/monstate or tmp/pymonstate; the alert recorder logs to tmp/mon.log and
    tmp/pymon.log (with `monitor_log`, the monitor recorder to tmp/NAME.monitor.log);
    `log_to_state`: mon's -L logdir is its state directory."""
    st = tmp / "monstate"
    st.mkdir()
    (tmp / "pymonstate").mkdir()
    env = {n: {"ALERT_LOG": str(tmp / f"{n}.log"),
               **({"MONITOR_LOG": str(tmp / f"{n}.monitor.log")} if monitor_log else {})} for n in ("mon", "pymon")}
    mon = subprocess.Popen([MON, "-c", str(cf), *(["-L", str(st)] if log_to_state else []), "-D", str(st),
                            "-P", str(st / "pid"), "-p", str(free_port()), "-t", str(free_port())],
                           env={**os.environ, **env["mon"]},
                           stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    py = subprocess.Popen([sys.executable, "-m", "pymon", "run", "-c", str(cf)],
                          env={**os.environ, **env["pymon"], "STATE_DIRECTORY": str(tmp / "pymonstate")},
                          stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    return mon, py


def stop_both(mon: subprocess.Popen[bytes], py: subprocess.Popen[bytes]) -> tuple[str, str]:
    """SIGTERM to each one's session that still runs; (mon's stderr, pymon's stderr)."""
    for p in (mon, py):
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGTERM)
    return mon.communicate(timeout=20)[1].decode(), py.communicate(timeout=20)[1].decode()


@have_mon
def test_differential_against_real_mon(tmp_path: Path) -> None:
    port = free_port()
    (tmp_path / "mon.d").mkdir()
    (tmp_path / "alert.d").mkdir()
    (tmp_path / "log").mkdir()
    shutil.copy(HERE / "diff" / "rec.monitor", tmp_path / "mon.d" / "rec.monitor")
    shutil.copy(HERE / "diff" / "rec.alert", tmp_path / "alert.d" / "rec.alert")
    cf = tmp_path / "mon.cf"
    cf.write_text((HERE / "diff" / "mon.cf.in").read_text().replace("@TMP@", str(tmp_path))
                  .replace("@PORT@", str(port)))
    backend = Backend(port)
    backend.up()
    mon, py = side_by_side(tmp_path, cf, monitor_log=True)
    t0 = time.monotonic()
    try:
        # `interval 1s`: pymon checks every second; mon every ~3 s (its 1 s timer restarts
        # only once it has reaped the previous run). 10 s outages hold >= 3 mon checks.
        for at, action in ((5, backend.down), (15, backend.up), (23, backend.down), (33, backend.up)):
            time.sleep(max(0.0, t0 + at - time.monotonic()))
            action()
            assert mon.poll() is None and py.poll() is None
        time.sleep(max(0.0, t0 + 39 - time.monotonic()))
    finally:
        mon_err, py_err = stop_both(mon, py)
        backend.down()
    got_mon, got_py = alerts(tmp_path / "mon.log"), alerts(tmp_path / "pymon.log")
    raw = {n: (tmp_path / f"{n}.log").read_text() if (tmp_path / f"{n}.log").exists() else "" for n in ("mon", "pymon")}
    assert got_py == got_mon, f"t0={time.time() - (time.monotonic() - t0):.0f}\n{raw}\n{mon_err}\n{py_err}"
    # each alert's argv, environment and stdin: startup alerts get mon's zeros, upalerts the
    # outage's times, output and summary, MON_LOGDIR is mon.cf's logdir
    rec_mon, rec_py = alert_records(tmp_path / "mon.log.json"), alert_records(tmp_path / "pymon.log.json")
    for key in rec_mon:
        assert rec_py.get(key) == rec_mon[key], key
    assert rec_py.keys() == rec_mon.keys()
    up = rec_mon[("script", "A")][2]["env"]
    assert up["MON_ALERTTYPE"] == "up" and up["MON_LAST_FAILURE"] == "before -t" and up["first <= last failure"]
    assert up["MON_LAST_SUMMARY"] == "127.0.0.1" and "Connection refused" in str(up["MON_LAST_OUTPUT"])
    assert up["last success before first failure"] and up["MON_LOGDIR"] == str(tmp_path / "log")
    # the monitor's environment: the same kinds of state, from the first run on (zeros)
    mons = {n: [env_facts(json.loads(ln), None, True)
                for ln in (tmp_path / f"{n}.monitor.log").read_text().splitlines()] for n in ("mon", "pymon")}
    assert mons["pymon"][0] == mons["mon"][0]
    kinds = {n: {json.dumps(e, sort_keys=True) for e in envs} for n, envs in mons.items()}
    assert kinds["pymon"] == kinds["mon"]
    # and the oracle itself saw what the schedule implies
    down = ("failure", "backend", "script", "127.0.0.1")
    up = ("up", "backend", "script", "127.0.0.1")
    assert got_mon[("script", "A")] == [("startup", "backend", "script", ""), down, up, down, up]
    assert got_mon[("script", "B")] == [down, up, down, up]  # alertafter 2, numalerts 1
    assert got_mon[("script", "C1")] == [down] * 4  # exit=1, numalerts 2 per outage
    assert ("script", "C2") not in got_mon  # exit=2-9 never matches tcp.monitor's 1
    assert [a[0] for a in got_mon[("native", "N")]] == ["failure", "up", "failure", "up"]
    assert all(a[3] == "127.0.0.1" for a in got_mon[("native", "N")])


class HttpBackend:
    """An HTTP/1.0 server on a loopback address: each answer is `status` after `delay` s."""

    def __init__(self, host: str, port: int, status: int, delay: float = 0.0):
        self.status, self.delay = status, delay
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((host, port))
        self.sock.listen(64)
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._answer, args=(conn,), daemon=True).start()

    def _answer(self, conn: socket.socket) -> None:
        with conn:
            try:
                conn.settimeout(10)
                conn.recv(4096)
                time.sleep(self.delay)
                conn.sendall(f"HTTP/1.0 {self.status} X\r\nContent-Length: 2\r\n\r\nok".encode())
            except OSError:
                pass

    def close(self) -> None:
        self.sock.close()


@have_mon
def test_http_differential_against_real_mon(tmp_path: Path) -> None:
    """Bare `http.monitor` takes only 200, 301, 302 and 401 (a 204 is a failure), and waits
    up to its own 30 s even under `interval 3s`: the same alerts from both daemons."""
    host = f"127.{os.getpid() % 200 + 20}.{int(time.time()) % 250 + 1}.1"
    slow = free_port()
    try:
        bare = HttpBackend(host, 80, 204)  # a bare http.monitor's port
    except PermissionError:
        pytest.skip("port 80 needs root (or net.ipv4.ip_unprivileged_port_start <= 80)")
    backends = [bare, HttpBackend(host, slow, 200, delay=4.0)]
    (tmp_path / "alert.d").mkdir()
    shutil.copy(HERE / "diff" / "rec.alert", tmp_path / "alert.d" / "rec.alert")
    cf = tmp_path / "mon.cf"
    cf.write_text((HERE / "diff" / "http.cf.in").read_text().replace("@TMP@", str(tmp_path))
                  .replace("@HOST@", host).replace("@SLOWPORT@", str(slow)))
    mon, py = side_by_side(tmp_path, cf, log_to_state=True)
    try:
        time.sleep(16)  # mon: 4-5 checks of each; its first after one interval
    finally:
        mon_err, py_err = stop_both(mon, py)
        for b in backends:
            b.close()
    got_mon, got_py = alerts(tmp_path / "mon.log"), alerts(tmp_path / "pymon.log")
    assert got_mon == {("bare", "bare"): [("failure", "web", "bare", host)]}, (mon_err, got_mon)
    assert got_py == got_mon, (py_err, got_py)


def test_trap_only_service(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cf = tmp_path / "mon.cf"
    cf.write_text("hostgroup g h1\n\nwatch g\n    service hb\n        traptimeout 5m\n        period wd {Sun-Sat}\n"
                  "            alert mail.alert ops\n    service both\n        interval 1m\n"
                  "        monitor tcp.monitor -p 22\n        traptimeout 5m\n")
    conv = moncf.import_text(cf.read_text(), str(cf))
    assert conv.data["watch"]["g"]["hb"]["traptimeout"] == "5m" and "monitor" not in conv.data["watch"]["g"]["hb"]
    assert "traptimeout" not in conv.data["watch"]["g"]["both"]
    assert "traptimeout is for trap-only services" in dict(conv.notes)[11]
    rc, _, err = cli(capsys, "check-config", "-c", str(cf))
    assert rc == 0, err
