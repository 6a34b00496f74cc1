"""The waiting page in a real browser (issue 14): headless Chromium driven by Selenium
(Debian's chromium, chromium-driver and python3-selenium; scripts/setup.sh installs them)
submits the demo shop's order form to a queued route with a tiny rate.

- with JavaScript: the waiting page shows the place in line, counts down without a
  reload (long-polls of the ticket), and ends on the shop's own answer (303 -> order page);
- cancelling: the button DELETEs the ticket, the order never reaches the shop;
- without JavaScript: the page refreshes itself (meta refresh to the ticket URL) until the
  shop's answer is there.

Screenshots of each state go to $FLOODGATE_OUTPUT_DIR/browser/ (meson sets it to
BUILD/tests/output), else to the run's temp directory; their paths are printed.
Waits are WebDriverWait conditions with generous timeouts: the machine may be slow."""

import os
import re

from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions as EC
from selenium.webdriver.support.ui import WebDriverWait

from harness import add_cleanup, http, test, tmp_dir, run_tests
import shared_redis
from queue_support import GW, TICKETS

shop, redis = shared_redis.start_shared("browser")

CHROMIUM = os.environ.get("FLOODGATE_CHROMIUM", "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("FLOODGATE_CHROMEDRIVER", "/usr/bin/chromedriver")
SLOW = 90  # seconds any one page state may take to appear on a busy machine


def out_dir():
    base = os.environ.get("FLOODGATE_OUTPUT_DIR")
    if not base:
        return tmp_dir("browser")
    d = os.path.join(base, "browser")
    os.makedirs(d, exist_ok=True)
    return d


def shot(driver, name):
    path = os.path.join(out_dir(), name + ".png")
    driver.save_screenshot(path)
    print(f"screenshot: {path}")
    return path


def browser(javascript=True, lang="en-US"):
    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for a in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
              "--window-size=900,760", "--no-first-run", "--disable-extensions",
              f"--lang={lang}", "--user-data-dir=" + tmp_dir("chromium-profile")):
        opts.add_argument(a)
    prefs = {"intl.accept_languages": lang}
    if not javascript:
        prefs["profile.managed_default_content_settings.javascript"] = 2
    opts.add_experimental_option("prefs", prefs)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=opts)
    driver.set_page_load_timeout(SLOW)
    add_cleanup(driver.quit)
    return driver


def checkout_gateway(rate):
    """The demo shop behind Floodgate, its checkout queued at `rate` per second."""
    route = {"name": "checkout", "match": {"methods": ["POST"], "path": "/checkout"},
             "upstream": "shop", "rate": rate, "burst": 0, "overflow": "queue"}
    other = {"name": "shop", "match": {"prefix": "/"}, "upstream": "shop"}
    return GW([route, other], extra='[pages]\nshop_name = "Demo Shop"\n')


def line_up(g, n):
    """API orders until `n` are queued (those the budget still has room for go straight
    through); returns how many went through."""
    through = queued = 0
    while queued < n:
        r = http("POST", g.port, "/checkout", [("Content-Type", "application/x-www-form-urlencoded")],
                 b"sku=steam-50&qty=1")
        if r.status == 303:
            through += 1
            assert through < 10, "the checkout budget never ran out"
            continue
        assert r.status == 202 and r.header("content-type") == "application/json", r
        queued += 1
    return through


def open_shop(driver, g):
    driver.get(f"http://127.0.0.1:{g.port}/")
    WebDriverWait(driver, SLOW).until(EC.element_to_be_clickable((By.ID, "buy")))


def buy(driver):
    driver.find_element(By.ID, "buy").click()
    WebDriverWait(driver, SLOW).until(EC.presence_of_element_located((By.ID, "position")))


def position(driver):
    text = driver.find_element(By.ID, "position").text.strip()
    return int(text) if re.fullmatch(r"\d+", text) else None


def wait_for_order_page(driver):
    WebDriverWait(driver, SLOW).until(lambda d: "/orders/o-" in d.current_url)
    thanks = WebDriverWait(driver, SLOW).until(EC.visibility_of_element_located((By.ID, "thanks")))
    assert re.fullmatch(r"Thank you! Order o-\d+ is confirmed\.", thanks.text), thanks.text
    return thanks


@test(timeout=240)
def the_waiting_page_counts_down_live_and_ends_on_the_shops_answer():
    shared_redis.fresh_shop()
    g = checkout_gateway(rate=0.5)  # one order every 2 s
    d = browser()
    open_shop(d, g)  # the slow part (starting Chromium) is over before the line forms
    through = line_up(g, 5)
    buy(d)
    first = position(d)
    assert first is not None and first >= 1, d.page_source[:2000]
    assert d.find_element(By.TAG_NAME, "h1").text == "You are in line"
    assert d.find_element(By.ID, "live").get_attribute("aria-live") == "polite"
    # The script replaced the form POST's address with the ticket URL (a reload is safe).
    assert TICKETS in d.current_url, d.current_url
    shot(d, "1-waiting")
    # A mark that a reload would wipe out: the numbers below must move without one.
    d.execute_script("window.fgNoReload = 42;")
    WebDriverWait(d, SLOW).until(lambda drv: (position(drv) is not None and position(drv) < first)
                                 or "/orders/" in drv.current_url)
    if "/orders/" not in d.current_url:
        assert d.execute_script("return window.fgNoReload;") == 42, "the page was reloaded"
        shot(d, "2-counting-down")
        # Narrow phone screen: nothing wider than the viewport.
        d.set_window_size(390, 844)
        assert d.execute_script("return document.documentElement.scrollWidth <= window.innerWidth;")
        shot(d, "2-counting-down-phone")
        d.set_window_size(900, 760)
    wait_for_order_page(d)
    shot(d, "3-shops-answer")
    # The shop got every order once: those that went through, the 5 queued, this one.
    assert shop.stats()["orders"] == through + 6, shop.stats()


@test(timeout=180)
def cancel_deletes_the_ticket_and_nothing_reaches_the_shop():
    shared_redis.fresh_shop()
    g = checkout_gateway(rate=0.01)
    d = browser(lang="zh-CN")
    open_shop(d, g)
    through = line_up(g, 1)
    buy(d)
    assert d.find_element(By.TAG_NAME, "h1").text == "您正在排队"
    cancel = WebDriverWait(d, SLOW).until(EC.element_to_be_clickable((By.ID, "cancel")))
    shot(d, "4-before-cancel")
    ticket = d.current_url.split(TICKETS, 1)[1]
    cancel.click()
    WebDriverWait(d, SLOW).until(EC.visibility_of_element_located((By.ID, "cancelled")))
    assert not d.find_element(By.ID, "cancel").is_displayed()
    shot(d, "5-cancelled")
    r = g.get_ticket(ticket)
    assert r.status == 410 and r.json()["status"] == "cancelled", r
    assert shop.stats()["orders"] == through, shop.stats()  # none of the queued ones


@test(timeout=240)
def without_javascript_the_page_refreshes_itself_to_the_shops_answer():
    shared_redis.fresh_shop()
    g = checkout_gateway(rate=0.5)
    d = browser(javascript=False)
    open_shop(d, g)
    line_up(g, 2)
    buy(d)
    assert position(d) is not None
    assert d.find_element(By.TAG_NAME, "h1").text == "You are in line"
    assert not d.find_element(By.ID, "cancel").is_displayed()  # cancelling needs the script
    assert "This page refreshes itself every 5 seconds." in d.page_source
    shot(d, "6-waiting-no-javascript")
    wait_for_order_page(d)
    shot(d, "7-shops-answer-no-javascript")


if __name__ == "__main__":
    run_tests()
