"""Pages for browsers ([pages], issue 14) over real sockets: a browser navigation that
gets one of Floodgate's own answers (a 202 ticket, the ticket URL while it waits, a
failed, cancelled or unknown ticket, [degrade], its own 429 and 503) sees an HTML page
with the same status, Location and Retry-After; JSON clients see no change; a done
ticket replays the shop's answer as it was; templates are checked at --check and reload.
The real-browser tests are in test_browser.py."""

import re
import subprocess
import time

from harness import (gateway_config, http, free_port, start_gateway, test, tmp_dir, wait_until,
                     run_tests)
import shared_redis
from shared_redis import other_route, fresh_shop, check_retry_after
from queue_support import ORDERS, TICKETS, orders_route, GW, check_queued_answer

shop, redis = shared_redis.start_shared("pages")

# What Chrome sends for a form POST (a navigation) and for the page's own fetch().
NAVIGATE = {"Sec-Fetch-Mode": "navigate", "Sec-Fetch-Dest": "document",
            "Accept": "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8",
            "Accept-Language": "en-US,en;q=0.9"}
FETCH = {"Sec-Fetch-Mode": "cors", "Accept": "application/json"}
FORM = "application/x-www-form-urlencoded"
NONCE = re.compile(r"script-src 'nonce-([A-Za-z0-9_-]{22})'")


def browser_post(g, headers=None, body=b"sku=card-10&qty=1"):
    h = dict(NAVIGATE)
    h.update(headers or {})
    return g.post(path=ORDERS, body=body, headers=h, content_type=FORM)


def check_page(resp, status):
    """An HTML page answer: its status, the page headers, a nonce on every script and
    style that matches the CSP, no ETag. Returns the body."""
    assert resp.status == status, resp
    assert resp.header("content-type") == "text/html; charset=utf-8", resp
    assert resp.header("cache-control") == "no-store", resp
    assert resp.header("x-content-type-options") == "nosniff", resp
    assert resp.header("referrer-policy") == "no-referrer", resp
    assert resp.header("vary") == "Accept, Sec-Fetch-Mode, Accept-Language", resp
    assert resp.header("etag") is None, resp
    csp = resp.header("content-security-policy")
    m = NONCE.search(csp or "")
    assert m and "default-src 'none'" in csp, csp
    body = resp.text
    assert body.startswith("<!DOCTYPE html>"), body[:80]
    tags = re.findall(r"<(script|style)\b[^>]*>", body)
    assert tags, "a page without its script or style"
    assert len(re.findall(r'<(?:script|style)\b[^>]*nonce="' + m.group(1) + '"', body)) == len(tags), body
    assert "{{" not in body, body
    return body


def slow_gw(rate=0.02, **more):
    """Orders parked behind one live primer: the route admits one request per 50 s."""
    return GW([orders_route(rate, idem=False, **more), other_route()])


def park_one(g, **kw):
    primer = g.post(path=ORDERS, body=b"{}")
    assert primer.status == 201, primer
    return browser_post(g, **kw)


@test(timeout=30)
def a_form_post_that_is_queued_gets_the_waiting_page_with_the_same_headers():
    g = slow_gw()
    resp = park_one(g)
    body = check_page(resp, 202)
    loc = resp.header("location")
    assert loc and loc.startswith(TICKETS), resp
    check_retry_after(resp)
    tid = loc[len(TICKETS):]
    assert '<html lang="en">' in body
    assert "You are in line" in body and "Requests ahead of you" in body
    assert re.search(r'<dd id="position">0</dd>', body), body
    assert f'data-ticket="{loc}"' in body and f'data-poll="{loc}"' in body
    assert f'<meta http-equiv="refresh" content="5;url={loc}">' in body
    assert 'aria-live="polite"' in body and tid in body
    # A second browser request is one further back in line.
    second = browser_post(g)
    assert re.search(r'<dd id="position">1</dd>', check_page(second, 202))
    # An API client posting the same thing keeps the JSON contract.
    api = g.post(path=ORDERS, body=b'{"item":1}')
    check_queued_answer(api)
    assert api.json()["position"] == 2, api.json()
    # So does the page's own long-poll of its ticket, while a navigation to it (a reload,
    # the no-script refresh) sees the waiting page again.
    polled = g.get_ticket(tid, headers=FETCH)
    assert polled.status == 202 and polled.header("content-type") == "application/json", polled
    assert polled.json()["status"] == "queued" and polled.header("etag"), polled
    again = g.get_ticket(tid, headers=NAVIGATE)
    check_page(again, 202)
    assert again.header("location") == loc
    # HEAD: the page's headers, no body.
    head = http("HEAD", g.port, loc, NAVIGATE)
    assert head.status == 202 and head.body == b"" and int(head.header("content-length")) > 1000, head


@test(timeout=30)
def the_page_speaks_chinese_to_a_chinese_browser_and_names_the_shop():
    g = slow_gw()
    resp = park_one(g, headers={"Accept-Language": "zh-CN,zh;q=0.9,en;q=0.8", "Host": "shop.example"})
    body = check_page(resp, 202)
    assert '<html lang="zh-CN">' in body and "您正在排队" in body, body[:400]
    assert "shop.example" in body


@test(timeout=30)
def a_done_ticket_replays_the_shops_own_answer_to_a_browser():
    g = GW([orders_route(2, idem=False), other_route()])
    resp = park_one(g)
    check_page(resp, 202)
    loc = resp.header("location")
    tid = loc[len(TICKETS):]
    final, _ = g.wait_final(tid, timeout=15)
    assert final.status == 201, final
    nav = g.get_ticket(tid, headers=NAVIGATE)
    assert nav.status == 201 and nav.header("ticket-status") == "done", nav
    assert nav.header("content-type") == "application/json", nav
    assert nav.json()["order_id"].startswith("o-"), nav.body


@test(timeout=40)
def failed_cancelled_and_unknown_tickets_show_the_error_page():
    fresh_shop()
    g = GW([orders_route(2, idem=False), other_route()], upstream={"retry": {"attempts": 1, "on": ["connect", "timeout", "500"]}})
    shop.config(error_rate=1.0)
    primer = g.post(path=ORDERS, body=b"{}")
    assert primer.status == 500, primer
    tid = check_queued_answer(g.post(path=ORDERS, body=b"{}"))
    final, _ = g.wait_final(tid, timeout=15)
    assert final.status == 502 and final.json()["status"] == "failed", final
    page = g.get_ticket(tid, headers=NAVIGATE)
    body = check_page(page, 502)
    assert page.header("ticket-status") == "failed", page
    assert "Your request could not be completed." in body and "check your orders" in body
    assert tid in body

    shop.config(error_rate=0.0)
    slow = slow_gw()
    parked = park_one(slow)
    stid = parked.header("location")[len(TICKETS):]
    assert slow.delete_ticket(stid).status == 200
    gone = slow.get_ticket(stid, headers=NAVIGATE)
    assert "Your request was cancelled." in check_page(gone, 410)
    assert slow.get_ticket(stid).json()["status"] == "cancelled"

    unknown = slow.get_ticket("A" * 22, headers=NAVIGATE)
    assert "Your place in line has expired." in check_page(unknown, 404)
    assert slow.get_ticket("A" * 22).json()["error"] == "unknown_ticket"
    # DELETE is never a page.
    d = http("DELETE", slow.port, TICKETS + "A" * 22, NAVIGATE)
    assert d.status == 404 and d.header("content-type") == "application/json", d


@test(timeout=30)
def own_429_and_503_and_degrade_are_pages_for_browsers_only():
    route = {"name": "limited", "match": {"prefix": "/echo"}, "upstream": "shop",
             "client_rate": 0.01, "client_burst": 1}
    degrade = {"name": "busy", "match": {"prefix": "/slow"}, "upstream": "shop",
               "rate": 0.01, "burst": 0, "overflow": "degrade"}
    g = start_gateway(lambda port: gateway_config(
        shop.port, port, routes=[route, degrade, other_route()],
        extra='[degrade]\nstatus = 503\nretry_after = "3s"\n'))
    assert http("GET", g.port, "/echo").status == 200
    api = http("GET", g.port, "/echo")
    assert api.status == 429 and api.json()["error"] == "client_rate_limited", api
    page = http("GET", g.port, "/echo", NAVIGATE)
    body = check_page(page, 429)
    assert page.header("retry-after") == api.header("retry-after"), (page, api)
    assert "faster than the shop can take them" in body
    assert http("GET", g.port, "/slow").status == 200
    d_api = http("GET", g.port, "/slow")
    assert d_api.status == 503 and d_api.header("content-type").startswith("application/json"), d_api
    d_page = http("GET", g.port, "/slow", NAVIGATE)
    body = check_page(d_page, 503)
    assert d_page.header("retry-after") == "3"
    assert "The shop is very busy" in body
    # The connection stays usable after a page (keep-alive framing is right).
    from harness import Conn
    with Conn(g.port) as c:
        c.request("GET", "/echo", list(NAVIGATE.items()))
        assert c.recv_response().status == 429
        c.request("GET", "/other", [])
        assert c.recv_response().status == 404


@test(timeout=30)
def enabled_false_keeps_json_for_browsers_too():
    g = GW([orders_route(0.02, idem=False), other_route()], wait_redis=False)
    g.gw.reload(g.render(g.port) + "[pages]\nenabled = false\n")
    g.gw.wait_log(lambda l: l.get("event") == "reload_ok", timeout=10)
    g.wait_redis_up()
    primer = g.post(path=ORDERS, body=b"{}")
    assert primer.status == 201
    check_queued_answer(browser_post(g))


@test(timeout=40)
def templates_are_checked_at_check_and_swapped_on_reload():
    d = tmp_dir("pages")
    good = d + "/waiting.html"
    with open(good, "w") as f:
        f.write('<!DOCTYPE html>\n<html lang="{{lang}}"><title>{{shop_name}}</title>\n'
                '<main>Hold on, {{position}} ahead. <a href="{{ticket_url}}">ticket</a></main>\n'
                '<style nonce="{{nonce}}">main{color:red}</style></html>\n')
    g = GW([orders_route(0.02, idem=False), other_route()])
    cfg_path = g.gw.config_path
    base = g.render(g.port)
    bad = d + "/broken.html"
    with open(bad, "w") as f:
        f.write("<!DOCTYPE html>\n<p>\n  {{postion}}</p>\n")
    with open(cfg_path, "w") as f:
        f.write(base + f'[pages]\nwaiting = "{bad}"\nshop_name = "Starfall"\n')
    import os
    out = subprocess.run([os.environ["FLOODGATE_BIN"], "--check", "-c", cfg_path],
                         capture_output=True, text=True, timeout=20)
    assert out.returncode == 1, out
    assert f"{bad}:3:3: unknown placeholder {{{{postion}}}}" in out.stderr, out.stderr
    # A reload with the broken template is refused; the built-in page stays.
    g.gw.reload()
    g.gw.wait_log(lambda l: l.get("event") == "reload_failed", timeout=10)
    assert "You are in line" in check_page(park_one(g), 202)
    # The good one is taken by a reload, with the shop name.
    g.gw.reload(base + f'[pages]\nwaiting = "{good}"\nshop_name = "Starfall"\n')
    g.gw.wait_log(lambda l: l.get("event") == "reload_ok", timeout=10)
    g.wait_redis_up()
    body = browser_post(g).text
    assert re.search(r"<main>Hold on, \d+ ahead\.", body) and "<title>Starfall</title>" in body, body


if __name__ == "__main__":
    run_tests()
