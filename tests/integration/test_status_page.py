"""The status page in headless Chromium (Debian's chromium + chromium-driver, driven by
Selenium): log in with the token, see a host go down within one refresh, disable a host
and acknowledge a service with the page's buttons; a farm of 50 virtual services and
1,000 real servers (real HTTP servers on loopback addresses), problems first, filtered,
with its timeline and alert history. Screenshots go to tests/artifacts/."""

from __future__ import annotations

import asyncio
import http.client
import os
import shutil
import threading
import time
from pathlib import Path
from typing import Iterator

import pytest

from apiclient import A, B, Running
from daemons import Daemon
from httpserver import Server, free_port

selenium = pytest.importorskip("selenium")
from selenium import webdriver  # noqa: E402
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.common.keys import Keys  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

ARTIFACTS = Path(__file__).parents[1] / "artifacts"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
REFRESH_S = 2.0  # the page's default polling interval


@pytest.fixture
def browser(tmp_path: Path):  # type: ignore[no-untyped-def]
    if not (os.path.exists(CHROMIUM) and os.path.exists(CHROMEDRIVER)):
        pytest.skip("needs Debian's chromium and chromium-driver (in .ci/apt-packages)")
    os.environ.setdefault("SE_OFFLINE", "true")  # never let Selenium Manager download anything
    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-quic", "--no-first-run", "--window-size=1280,900",
                 f"--user-data-dir={tmp_path / 'chromium-profile'}"):
        opts.add_argument(flag)
    drv = webdriver.Chrome(options=opts, service=Service(executable_path=CHROMEDRIVER))
    try:
        yield drv
    finally:
        drv.quit()


def cell(drv: webdriver.Chrome, service: str, host: str):  # type: ignore[no-untyped-def]
    return drv.find_element(By.CSS_SELECTOR, f'tr[data-service="{service}"] span.host[data-host="{host}"]')


def state_of(drv: webdriver.Chrome, service: str, host: str) -> str | None:
    try:
        return cell(drv, service, host).get_attribute("data-state")
    except Exception:  # noqa: BLE001 - re-rendered between find and read
        return None


def text_of(drv: webdriver.Chrome, css: str) -> str:
    """The page re-renders on every poll: find and read again when an element went stale."""
    for _ in range(20):
        try:
            return drv.find_element(By.CSS_SELECTOR, css).text
        except Exception:  # noqa: BLE001
            time.sleep(0.05)
    return ""


def click(drv: webdriver.Chrome, css: str) -> None:
    for _ in range(20):
        try:
            drv.find_element(By.CSS_SELECTOR, css).click()
            return
        except Exception:  # noqa: BLE001
            time.sleep(0.05)
    raise AssertionError(f"cannot click {css}")


def answer_prompt(drv: webdriver.Chrome, text: str) -> None:
    WebDriverWait(drv, 5).until(lambda d: _alert(d) is not None)
    alert = drv.switch_to.alert
    if text:
        alert.send_keys(text)
    alert.accept()


def _alert(drv: webdriver.Chrome):  # type: ignore[no-untyped-def]
    try:
        return drv.switch_to.alert
    except Exception:  # noqa: BLE001
        return None


def test_status_page(pymon: Running, browser: webdriver.Chrome) -> None:  # noqa: F811
    ARTIFACTS.mkdir(exist_ok=True)
    drv = browser
    pymon.d.wait(lambda e: e["event"] == "daemon.ready")
    drv.get(f"http://127.0.0.1:{pymon.port}/login?token={pymon.token}")
    WebDriverWait(drv, 10).until(lambda d: state_of(d, "g:s", B) == "up")
    assert drv.current_url == f"http://127.0.0.1:{pymon.port}/"
    assert "ready" in drv.find_element(By.ID, "line").text

    # a host goes down: the page shows it within one refresh, without a reload
    (pymon.tmp / f"down-{B}").touch()
    pymon.d.wait(lambda e: e["event"] == "host.state" and e["host"] == B and e["state"] == "down")
    t0 = time.monotonic()
    WebDriverWait(drv, 10, poll_frequency=0.05).until(lambda d: state_of(d, "g:s", B) == "down")
    seen_after = time.monotonic() - t0
    assert seen_after <= REFRESH_S + 0.5, seen_after
    assert "FAIL" in text_of(drv, 'tr[data-service="g:s"] td.status')
    assert text_of(drv, 'tr[data-service="g:s"] td.summary') == B
    assert "flagged down" in text_of(drv, f'tr[data-service="g:s"] span.host[data-host="{B}"]')
    # the virtual service: B quiesced (weight 0 wanted) in the dry-run table, labelled a simulation
    vs = 'tr.vs[data-vs="TCP 10.9.9.9:80"]'
    WebDriverWait(drv, 5).until(lambda d: d.find_element(By.CSS_SELECTOR, f'{vs} span.chip[data-real="{B}:80"]')
                                .get_attribute("data-state") == "down")
    assert drv.find_element(By.ID, "source").get_attribute("data-source") == "simulation"
    click(drv, f"{vs} button.details")
    WebDriverWait(drv, 5).until(lambda d: text_of(d, f'tr.vs-detail tr[data-real="{B}:80"] td.wanted') == "0")
    assert "simulated weight (dry run)" in text_of(drv, "tr.vs-detail thead")
    drv.save_screenshot(str(ARTIFACTS / "status-page-host-down.png"))

    # the disable button disables the host (reason and duration asked for)
    click(drv, f'tr.vs-detail tr[data-real="{A}:80"] button.disable')
    answer_prompt(drv, "maintenance")
    answer_prompt(drv, "1h")
    WebDriverWait(drv, 10).until(lambda d: state_of(d, "g:s", A) == "disabled")
    code, dis = pymon.call("GET", "/disabled")
    assert dis["host"][A]["reason"] == "maintenance" and dis["host"][A]["by"].startswith("web 127.0.0.1")
    assert dis["host"][A]["until"] == pytest.approx(time.time() + 3600, abs=30)
    pymon.d.wait(lambda e: e["event"] == "control.disabled" and e["name"] == A)

    # ack from the page
    click(drv, 'tr[data-service="g:s"] button.ack')
    answer_prompt(drv, "swapping the disk")
    WebDriverWait(drv, 10).until(lambda d: "swapping the disk" in text_of(d, 'tr[data-service="g:s"] td.status'))
    assert pymon.svc("s")["acked"] == "swapping the disk"
    drv.save_screenshot(str(ARTIFACTS / "status-page.png"))

    # and enable again
    click(drv, f'tr[data-service="g:s"] span.host[data-host="{A}"] button.enable')
    WebDriverWait(drv, 10).until(lambda d: state_of(d, "g:s", A) == "up")
    assert pymon.call("GET", "/disabled")[1]["host"] == {}

    # drain A from its real-server row (timeout asked for), then undrain it
    row = f'tr.vs-detail tr[data-real="{A}:80"]'
    click(drv, f"{row} button.drain")
    answer_prompt(drv, "5m")
    WebDriverWait(drv, 10).until(lambda d: text_of(d, f"{row} td.rs-state") == "draining")
    drains = pymon.call("GET", "/status")[1]["drains"]
    assert drains[A]["deadline"] == pytest.approx(time.time() + 300, abs=30)
    assert drains[A]["by"].startswith("web 127.0.0.1")
    assert text_of(drv, f"{row} td.wanted") == "0"
    click(drv, f"{row} button.undrain")
    WebDriverWait(drv, 10).until(lambda d: text_of(d, f"{row} td.rs-state") == "pooled")
    assert pymon.call("GET", "/status")[1]["drains"] == {}


# -- a real farm: 50 virtual services x 20 real servers --------------------------------------

VIPS, REALS = 50, 20
DOWN_VS = 7  # every real server of 10.10.7.1:80 refuses connections
DEGRADED = {(13, 3), (13, 4)}  # two of 10.10.13.1:80's


def farm_config(tmp: Path, port: int, http_port: int) -> Path:
    groups = "\n".join(f"  vip{v:02d}: [{', '.join(f'127.1.{v}.{r}' for r in range(1, REALS + 1))}]"
                       for v in range(VIPS))
    watch = "\n".join(f"  vip{v:02d}:\n    http:\n      interval: 10s\n      monitor: {{name: http, port: {http_port}}}\n"
                      f"      periods: [{{alert: [log], upalert: [log]}}]" for v in range(VIPS))
    vss = "\n".join(f"  - {{vip: '10.10.{v}.1:80', watch: 'vip{v:02d}:http', "
                    f"real_servers: [{', '.join(f'127.1.{v}.{r}' for r in range(1, REALS + 1))}]}}" for v in range(VIPS))
    cfg = tmp / "pymon.yaml"
    cfg.write_text(f"globals: {{statedir: {tmp}, control_port: {port}}}\nhostgroups:\n{groups}\nwatch:\n{watch}\n"
                   f"virtual_services:\n{vss}\nipvs: {{dry_run: true}}\n")
    return cfg


@pytest.fixture
def farm_http() -> Iterator[int]:
    """One aiohttp server listening on every real server's loopback address but the
    down ones (they refuse connections, as a stopped web server does)."""
    loop = asyncio.new_event_loop()
    server = Server()
    hosts = [f"127.1.{v}.{r}" for v in range(VIPS) for r in range(1, REALS + 1)
             if v != DOWN_VS and (v, r) not in DEGRADED]
    threading.Thread(target=loop.run_forever, daemon=True).start()
    asyncio.run_coroutine_threadsafe(server.start(hosts, port=free_port()), loop).result(60)
    yield server.port
    asyncio.run_coroutine_threadsafe(server.stop(), loop).result(30)
    loop.call_soon_threadsafe(loop.stop)


def fetch_bytes(port: int, token: str, path: str, gzip: bool = False) -> int:
    """The body's bytes as sent (compressed when `gzip`: http.client does not inflate)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    conn.request("GET", path, headers={"Authorization": f"Bearer {token}",
                                       **({"Accept-Encoding": "gzip"} if gzip else {})})
    r = conn.getresponse()
    n = len(r.read())
    assert r.status == 200, (path, r.status)
    conn.close()
    return n


def snapshot(drv: webdriver.Chrome) -> list[dict[str, object]]:
    return drv.execute_script("""return [...document.querySelectorAll('tr.vs')].map(r => ({
      vs: r.dataset.vs, problems: Number(r.dataset.problems), shown: !r.hidden,
      state: r.querySelector('td.state').textContent,
      chips: [...r.querySelectorAll('span.chip')].map(c => [c.dataset.real, c.dataset.state]),
      chart: r.querySelector('svg.timeline path') ? (r.querySelector('svg.timeline path').getAttribute('class') || '')
             : null}))""")


def visible_vs(drv: webdriver.Chrome) -> list[str]:
    return drv.execute_script(
        "return [...document.querySelectorAll('tr.vs')].filter(r => !r.hidden).map(r => r.dataset.vs)")


def test_status_page_farm(tmp_path: Path, farm_http: int, browser: webdriver.Chrome,
                          daemons: list[Daemon]) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    drv = browser
    port = free_port()
    d = Daemon(farm_config(tmp_path, port, farm_http))
    daemons.append(d)
    d.wait(lambda e: e["event"] == "daemon.ready", timeout=60)
    token = (tmp_path / "token").read_text().strip()
    drv.get(f"http://127.0.0.1:{port}/login?token={token}")  # sets the cookie; the page renders once
    WebDriverWait(drv, 30).until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "tr.vs")) == VIPS)

    # render time: navigation to all rows visible (the browser's own clock), page weight
    drv.get(f"http://127.0.0.1:{port}/")
    WebDriverWait(drv, 30, poll_frequency=0.02).until(
        lambda d: len(d.find_elements(By.CSS_SELECTOR, "tr.vs")) == VIPS)
    render_ms = drv.execute_script("return performance.now()")
    weight = {p: fetch_bytes(port, token, p) for p in
              ("/", "/status", "/timeline", "/history?limit=50", "/downtime?limit=50")}
    gz = {p: fetch_bytes(port, token, p, gzip=True) for p in weight}
    assert gz["/status"] < weight["/status"] / 5  # the poll's JSON goes compressed
    print(f"\nstatus page, {VIPS} virtual services x {REALS} real servers: rows visible {render_ms:.0f} ms "
          f"after navigation; bytes {weight}, total {sum(weight.values())}; gzip {gz}, total {sum(gz.values())}")

    rows = snapshot(drv)  # one read: the page re-renders every refresh
    assert len(rows) == VIPS and all(r["shown"] for r in rows)
    # problems first: the down pool, then the one with two real servers down, then the rest
    assert [r["vs"] for r in rows[:2]] == [f"TCP 10.10.{DOWN_VS}.1:80", "TCP 10.10.13.1:80"], rows[:3]
    assert [r["problems"] for r in rows[:2]] == [REALS, 2] and not any(r["problems"] for r in rows[2:])
    assert [r["state"] for r in rows[:3]] == ["down", "degraded", "ok"]
    assert [s for _, s in rows[0]["chips"]] == ["down"] * REALS
    chips = rows[1]["chips"]
    assert [s for _, s in chips[:3]] == ["down", "down", "pooled"]  # its problems first; the rest as the pool policy says
    assert {r for r, _ in chips[:2]} == {"127.1.13.3:80", "127.1.13.4:80"}

    # the timeline: one chart per virtual service; the down pool went to weight 0
    assert all(r["chart"] is not None for r in rows)
    assert rows[0]["chart"] == "zero" and rows[2]["chart"] == ""

    # the filter: by VIP, by a real server's host, by nothing; problems only
    box = drv.find_element(By.ID, "filter")
    box.send_keys("10.10.42.1:80")
    assert visible_vs(drv) == ["TCP 10.10.42.1:80"]
    box.clear()
    box.send_keys("127.1.13.4")
    WebDriverWait(drv, 5).until(lambda d: visible_vs(d) == ["TCP 10.10.13.1:80"])
    assert drv.execute_script("return [...document.querySelectorAll('tr.svc')].filter(r => !r.hidden)"
                              ".map(r => r.dataset.service)") == ["vip13:http"]
    box.send_keys(Keys.CONTROL, "a", Keys.DELETE)
    WebDriverWait(drv, 5).until(lambda d: len(visible_vs(d)) == VIPS)
    drv.find_element(By.ID, "problems").click()
    WebDriverWait(drv, 5).until(lambda d: len(visible_vs(d)) == 2)
    drv.save_screenshot(str(ARTIFACTS / "status-page-farm-problems.png"))
    drv.find_element(By.ID, "problems").click()

    # the alert history shows the down pool's alert
    WebDriverWait(drv, 15).until(lambda d: d.execute_script(
        """return [...document.querySelectorAll('#history tr.alert[data-type="alert"]')]
           .some(r => r.textContent.includes('vip07:http'))"""))
    assert drv.execute_script("return document.querySelectorAll('#downtime tr.outage.open').length") >= REALS + 2
    drv.save_screenshot(str(ARTIFACTS / "status-page-farm.png"))
    assert d.stop() == 0
