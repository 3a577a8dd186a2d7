"""The status page in headless Chromium (Debian's chromium + chromium-driver, driven by
Selenium): log in with the token, see a host go down within one refresh, disable a host
and acknowledge a service with the page's buttons. Screenshots go to tests/artifacts/."""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import pytest

from apiclient import A, B, Running

selenium = pytest.importorskip("selenium")
from selenium import webdriver  # noqa: E402
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
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
