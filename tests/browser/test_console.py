"""The web console in a real browser, against a real proxy and simulated nodes.

Tests run in file order and share one fleet: ``gamma`` is added by the second test
and is pulled to by the third, as an operator would do it.
"""

from __future__ import annotations

import os
import shutil
import threading
import time

import pytest
from playwright.sync_api import expect

from tests.browser.conftest import ADMIN_PASSWORD, ROOT, XSS, Console, Stack, http

pytestmark = pytest.mark.browser

DOCS_SCREENSHOT = ROOT / "docs" / "dashboard.png"


def chat(stack: Stack, model: str) -> tuple[int, object]:
    return http("POST", stack.url + "/api/chat", {
        "model": model, "stream": False, "messages": [{"role": "user", "content": "hello"}]}, timeout=20)


def card(console: Console, name: str):
    return console.page.locator("article.node-card").filter(has=console.page.get_by_role("link", name=name, exact=True))


def test_login_survives_reload_and_logout_ends_it(console: Console, stack: Stack):
    page = console.page
    page.goto(stack.url + "/", wait_until="commit")  # a browser opening the root lands on the console
    page.wait_for_url("**/ui/")
    expect(page.get_by_role("heading", name="Log in to Aivonx Proxy")).to_be_visible()
    console.shot("login")

    page.get_by_label("Username").fill("admin")
    page.get_by_label("Password").fill("not-the-password")
    page.get_by_role("button", name="Log in").click()
    expect(page.get_by_role("alert")).to_have_text("Wrong username or password.")

    page.get_by_label("Password").fill(ADMIN_PASSWORD)
    page.get_by_role("button", name="Log in").click()
    expect(page.get_by_role("heading", name="Dashboard")).to_be_visible()
    expect(card(console, "alpha")).to_contain_text("active")
    expect(page.locator(".active-pool")).to_contain_text("beta")

    page.reload()
    expect(page.get_by_role("heading", name="Dashboard")).to_be_visible()
    expect(card(console, "beta")).to_be_visible()

    page.get_by_role("button", name="Log out").click()
    expect(page.locator("#login-message")).to_have_text("You have been logged out.")
    page.reload()
    expect(page.get_by_role("heading", name="Log in to Aivonx Proxy")).to_be_visible()


def test_add_node_shows_field_errors_then_becomes_active_without_reload(console: Console, stack: Stack):
    page = console.page
    console.login()
    page.evaluate("window.__sameDocument = true")  # gone if anything reloads the page
    console.go("Nodes")
    port = stack.nodes["gamma"].rsplit(":", 1)[1]

    page.get_by_role("button", name="Add node").click()
    dialog = page.get_by_role("dialog", name="Add a node")
    dialog.get_by_label("Name").fill(XSS)
    dialog.get_by_label("Address").fill("127.0.0.1")
    dialog.get_by_label("Port").fill("70000")
    dialog.get_by_role("button", name="Add node").click()
    # The API's messages, each next to its field; the markup in the name stays text.
    expect(dialog.locator(".field", has=page.get_by_label("Name")).locator(".field-error")).to_contain_text(
        "letters, digits")
    expect(dialog.locator(".field", has=page.get_by_label("Port")).locator(".field-error")).to_contain_text(
        "65535")
    assert page.evaluate("window.__xss") is None
    console.shot("node-form-errors")

    dialog.get_by_label("Name").fill("gamma")
    dialog.get_by_label("Port").fill(port)
    dialog.get_by_label("Labels").fill("rack=r2")
    dialog.get_by_role("button", name="Add node").click()
    expect(dialog).to_be_hidden()
    row = page.locator("tr", has=page.get_by_role("link", name="gamma", exact=True))
    expect(row.locator(".node-status")).to_contain_text("active")
    console.shot("nodes")

    console.go("Dashboard")
    expect(page.locator(".active-pool")).to_contain_text("gamma")
    expect(card(console, "gamma")).to_contain_text("rack=r2")
    assert page.evaluate("window.__sameDocument") is True

    card(console, "gamma").get_by_role("link", name="gamma").click()
    expect(page.get_by_role("heading", name="gamma")).to_be_visible()
    expect(page.get_by_role("heading", name="Models (1)")).to_be_visible()
    expect(page.locator(".detail")).to_contain_text("llama3.2:latest")
    console.shot("node-detail")


def test_node_actions_drain_disable_check_and_delete_with_confirmation(console: Console, stack: Stack):
    page = console.page
    status, dead = stack.api("POST", "/api/proxy/nodes", {"name": "delta", "url": "http://127.0.0.1:9"})
    assert status == 201, dead
    console.login()
    expect(page.locator(".standby-pool")).to_contain_text("delta")  # nothing listens there
    expect(card(console, "delta").locator(".last-error-text")).to_contain_text("health check")
    console.go("Nodes")
    row = page.locator("tr", has=page.get_by_role("link", name="alpha", exact=True))
    row.get_by_role("button", name="Drain alpha").click()
    expect(row.locator(".node-status")).to_contain_text("drain")
    row.get_by_role("button", name="Resume alpha").click()
    expect(row.locator(".node-status")).not_to_contain_text("drain")
    row.get_by_role("button", name="Disable alpha").click()
    expect(row.locator(".node-status")).to_contain_text("disabled")
    row.get_by_role("button", name="Enable alpha").click()
    expect(row.locator(".node-status")).not_to_contain_text("disabled")
    page.get_by_role("button", name="Check now delta").click()
    expect(page.locator(".toast")).to_contain_text("delta is standby")

    page.get_by_role("button", name="Delete delta").click()
    confirm = page.get_by_role("dialog", name="Delete delta?")
    confirm.get_by_role("button", name="Cancel").click()
    expect(page.get_by_role("link", name="delta")).to_be_visible()
    page.get_by_role("button", name="Delete delta").click()
    confirm.get_by_role("button", name="Delete node").click()
    expect(page.get_by_role("link", name="delta")).to_have_count(0)
    assert stack.api("GET", f"/api/proxy/nodes/{dead['id']}")[0] == 404


def test_pull_to_all_nodes_shows_a_progress_bar_per_node_reaching_100(console: Console, stack: Stack):
    page = console.page
    expected = http("GET", stack.url + "/api/proxy/health")[1]["active"]  # 3 once gamma is added
    console.login()
    console.go("Models")
    expect(page.locator("tr.drift")).to_contain_text("digest drift")  # beta has other weights for llama3.2

    page.get_by_label("Model", exact=True).fill("phi3:mini")
    page.get_by_label("Pull to").select_option(label="All active nodes")
    page.get_by_role("button", name="Pull", exact=True).click()
    bars = page.locator(".pull-panel progress")
    seen_between = False
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        values = [int(v or 0) for v in bars.evaluate_all("els => els.map(e => e.value)")]
        seen_between = seen_between or any(0 < v < 100 for v in values)
        if len(values) == expected and all(v == 100 for v in values):
            break
        time.sleep(0.03)
    else:
        raise AssertionError(f"progress bars did not all reach 100: {values}")
    assert seen_between, "no bar ever showed progress between 0 and 100"
    expect(page.locator(".pull-row .pct")).to_have_text(["100 %"] * expected)
    expect(page.locator(".pull-summary")).to_have_text(f"Done: phi3:mini is on {expected} node(s).")
    row = page.locator("table.matrix tr", has_text="phi3:mini")
    expect(row.locator("td.present")).to_have_count(expected)
    console.shot("models")

    # Delete it from beta only, then pull it back to beta alone.
    row.get_by_role("button", name="Delete phi3:mini from nodes").click()
    dialog = page.get_by_role("dialog", name="Delete phi3:mini")
    for name in ("alpha", "gamma"):
        dialog.get_by_label(name).uncheck()
    dialog.get_by_role("button", name="Delete").click()
    expect(page.locator(".toast")).to_contain_text("Deleted phi3:mini from 1 node(s).")
    expect(row.locator("td.present")).to_have_count(expected - 1)
    page.locator(".pull-panel").get_by_role("button", name="Dismiss").click()
    row.get_by_role("button", name="Pull phi3:mini to beta").click()
    expect(page.locator(".pull-panel .pull-row")).to_have_count(1)
    expect(page.locator(".pull-panel .pull-row")).to_contain_text("beta")
    expect(page.locator(".pull-panel progress")).to_have_js_property("value", 100)
    expect(row.locator("td.present")).to_have_count(expected)


def test_switch_strategy_with_validation_messages(console: Console, stack: Stack):
    page = console.page
    console.login()
    console.go("Config")
    interval = page.get_by_label("Health check interval (s)").input_value()
    page.get_by_label("Routing strategy").select_option("round_robin")
    page.get_by_label("Health check interval (s)").fill("0")
    page.get_by_role("button", name="Save settings").click()
    field = page.locator(".field", has=page.get_by_label("Health check interval (s)"))
    expect(field.locator(".field-error")).to_be_visible()
    assert stack.api("GET", "/api/proxy/config")[1]["strategy"] == "least_active"  # nothing saved
    console.shot("config-errors")

    page.get_by_label("Health check interval (s)").fill(interval)
    page.get_by_role("button", name="Save settings").click()
    expect(page.locator(".toast")).to_contain_text("Saved: strategy")
    assert stack.api("GET", "/api/proxy/config")[1]["strategy"] == "round_robin"
    console.go("Dashboard")
    expect(page.locator(".tile", has_text="Strategy")).to_contain_text("round_robin")
    console.go("Config")
    expect(page.get_by_label("Routing strategy")).to_have_value("round_robin")
    console.shot("config")


def test_create_copy_and_revoke_an_api_key(console: Console, stack: Stack):
    page = console.page
    page.context.grant_permissions(["clipboard-read", "clipboard-write"], origin=stack.url)
    console.login()
    console.go("Users & keys")
    page.get_by_label("Key name").fill("ci-bot")
    page.get_by_role("button", name="Create key").click()
    dialog = page.get_by_role("dialog", name="Your new key")
    secret = dialog.get_by_label("The new key").input_value()
    assert secret.startswith("avx_")
    dialog.get_by_role("button", name="Copy").click()
    expect(dialog.get_by_role("button", name="Copied")).to_be_visible()
    assert page.evaluate("navigator.clipboard.readText()") == secret
    console.shot("key-created", full_page=False)
    dialog.get_by_role("button", name="Done").click()
    assert http("GET", stack.url + "/api/auth/me", token=secret)[0] == 200

    row = page.locator("tr", has_text="ci-bot")
    expect(row).to_contain_text("active")
    row.get_by_role("button", name="Revoke ci-bot").click()
    page.get_by_role("dialog", name="Revoke ci-bot?").get_by_role("button", name="Revoke key").click()
    expect(row).to_contain_text("revoked")
    assert http("GET", stack.url + "/api/auth/me", token=secret)[0] == 401
    console.shot("users-and-keys")


def test_requests_screen_lists_proxied_requests(console: Console, stack: Stack):
    page = console.page
    assert chat(stack, "qwen2.5:7b")[0] == 200
    available = stack.api("GET", "/api/proxy/requests?limit=5")[0] != 404
    console.login()
    console.go("Requests")
    if available:
        row = page.locator("table.requests-table tbody tr", has_text="qwen2.5").first
        expect(row).to_contain_text("alpha")
        page.get_by_label("Model").fill("no-such-model")
        page.get_by_role("button", name="Filter").click()
        expect(page.locator(".empty")).to_contain_text("No requests match")
    else:
        expect(page.locator(".empty")).to_have_text("The request log is not available on this proxy version.")
    console.shot("requests")


def test_dashboard_charts_fill_from_live_events(console: Console, stack: Stack):
    page = console.page
    console.login()
    expect(card(console, "alpha")).to_be_visible()
    before = stack.api("GET", "/api/proxy/state")[1]
    alpha_before = next(n["requests_total"] for n in before["nodes"] if n["name"] == "alpha")

    # The README shows docs/dashboard.png; refresh it on request only (with more traffic for a fuller
    # chart), so that test runs leave the tree clean.
    update_docs = bool(os.environ.get("AIVONX_UPDATE_SCREENSHOT")) or not DOCS_SCREENSHOT.exists()
    stop = threading.Event()
    started = time.monotonic()

    def traffic(models: list[str]) -> None:
        # Load that shifts between nodes, so the chart has something to show: qwen2.5 runs on
        # alpha only, mistral on beta only, llama3.2 anywhere.
        i = 0
        while not stop.is_set():
            phase = int((time.monotonic() - started) // 2.5) % 3
            chat(stack, models[(i + phase) % len(models)])
            i += 1
            time.sleep(0.05 * (1 + phase))

    workers = [threading.Thread(target=traffic, args=(m,), daemon=True)
               for m in (["qwen2.5:7b", "qwen2.5:7b", "llama3.2"], ["mistral", "llama3.2", "mistral"])]
    for worker in workers:
        worker.start()
    try:
        rate = page.locator(".chart-card").first.locator(".legend li", has_text="alpha").locator(".legend-value")
        expect(rate).not_to_have_text("0/s", timeout=15_000)
        expect(rate).not_to_have_text("—")
        # The card's counter moves with the traffic, without a reload.
        requests = card(console, "alpha").locator("dt:text-is('Requests') + dd")
        expect(requests).not_to_have_text(str(alpha_before))
        # More samples: a chart worth looking at.
        time.sleep(max(0.0, (16 if update_docs else 7) - (time.monotonic() - started)))
    finally:
        stop.set()
        for worker in workers:
            worker.join(10)
    ttfb = page.locator(".chart-card").nth(1).locator(".legend li", has_text="beta").locator(".legend-value")
    expect(ttfb).to_contain_text("ms")
    expect(page.locator(".chart-card path.line")).not_to_have_count(0)
    path = console.shot("dashboard", full_page=False)
    assert path.stat().st_size < 400_000
    if update_docs:
        DOCS_SCREENSHOT.parent.mkdir(exist_ok=True)
        shutil.copyfile(path, DOCS_SCREENSHOT)


def test_viewer_is_read_only_and_an_ended_session_returns_to_login(console: Console, stack: Stack):
    page = console.page
    status, user = stack.api("POST", "/api/users", {"username": "watcher", "password": "watcher-pass-1",
                                                    "role": "viewer"})
    assert status == 201, user
    console.login_with_form("watcher", "watcher-pass-1")
    nav = page.get_by_role("navigation", name="Main")
    expect(nav.get_by_role("link", name="Nodes")).to_be_visible()
    expect(nav.get_by_role("link", name="Users & keys")).to_have_count(0)
    console.go("Nodes")
    expect(page.locator("table.nodes-table")).to_contain_text("alpha")
    expect(page.get_by_role("button", name="Add node")).to_have_count(0)
    expect(page.get_by_role("button", name="Delete")).to_have_count(0)
    console.shot("nodes-viewer")
    console.go("Models")
    expect(page.locator("table.matrix")).to_contain_text("qwen2.5:7b")
    expect(page.get_by_role("button", name="Pull", exact=True)).to_have_count(0)
    expect(page.get_by_role("button", name="Delete…")).to_have_count(0)
    console.go("Config")
    expect(page.get_by_label("Routing strategy")).to_be_disabled()
    expect(page.get_by_role("button", name="Save settings")).to_have_count(0)

    # An admin resets the viewer's password: every session of theirs ends.
    assert stack.api("PATCH", f"/api/users/{user['id']}", {"password": "watcher-pass-2"})[0] == 200
    console.go("Models")
    nav.get_by_role("link", name="Config").click()  # its first API call answers 401
    expect(page.locator("#login-message")).to_have_text("Your session has expired — please log in again.")
    console.shot("session-expired")
    page.get_by_label("Username").fill("watcher")
    page.get_by_label("Password").fill("watcher-pass-2")
    page.get_by_role("button", name="Log in").click()
    expect(page.get_by_role("heading", name="Config")).to_be_visible()  # back where they were


def test_xss_payloads_from_nodes_users_and_errors_render_as_text(console: Console, stack: Stack):
    page = console.page
    alpha, beta = stack.node_id(stack.nodes["alpha"]), stack.node_id(stack.nodes["beta"])
    # A label value (free text), a key name (free text) and a node's own error message.
    assert stack.api("PATCH", f"/api/proxy/nodes/{alpha}", {"labels": {"note": XSS}})[0] == 200
    assert stack.api("POST", "/api/proxy/keys", {"name": XSS})[0] == 201
    fault = {"mode": "error_500", "routes": ["/api/chat"], "message": XSS, "count": 1}
    assert http("POST", stack.nodes["beta"] + "/_sim/faults", fault)[0] == 200
    assert chat(stack, "mistral")[0] >= 500  # only beta has mistral: its error is the node's last error
    try:
        console.login()
        expect(card(console, "beta").locator(".last-error-text")).to_contain_text(XSS)
        expect(card(console, "alpha").locator(".chip-label")).to_have_text(f"note={XSS}")
        console.shot("xss-dashboard")
        page.goto(f"{stack.url}/ui/#/nodes/{beta}")
        expect(page.locator(".errors")).to_contain_text(XSS)
        console.go("Users & keys")
        expect(page.locator(".key-name", has_text=XSS)).to_have_count(1)
        assert page.evaluate("window.__xss") is None
        assert page.locator("img[src='x']").count() == 0
    finally:
        stack.api("PATCH", f"/api/proxy/nodes/{alpha}", {"labels": {}})


def test_phone_width_renders_every_screen_without_horizontal_scrolling(console: Console, stack: Stack):
    page = console.page
    page.set_viewport_size({"width": 390, "height": 844})
    console.login()
    expect(card(console, "alpha")).to_be_visible()
    menu = page.get_by_role("button", name="Menu")
    for label, ready in (("Dashboard", ".node-card"), ("Nodes", "table.nodes-table"), ("Models", "table.matrix"),
                         ("Config", "form.config-form"), ("Users & keys", "table.rtable"),
                         ("Requests", ".table-wrap > table, .table-wrap > .empty")):
        menu.click()  # the menu folds away on a phone
        console.go(label)
        page.wait_for_selector(ready)
        wide = page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
        assert wide <= 0, f"{label}: {wide}px of horizontal scrolling"
        console.shot(f"phone-{label.split()[0].lower()}")


def test_keyboard_reaches_the_menu_and_shows_focus(console: Console, stack: Stack):
    page = console.page
    console.login()  # a fresh page load: focus starts at the top of the document
    expect(page.get_by_role("heading", name="Dashboard")).to_be_visible()
    page.keyboard.press("Tab")
    expect(page.locator("#skip-link")).to_be_focused()
    for _ in range(6):
        page.keyboard.press("Tab")
        if page.evaluate("document.activeElement.textContent") == "Nodes":
            break
    link = page.get_by_role("navigation", name="Main").get_by_role("link", name="Nodes")
    expect(link).to_be_focused()
    assert page.evaluate("getComputedStyle(document.activeElement).outlineStyle") != "none"
    page.keyboard.press("Enter")
    expect(page.get_by_role("heading", name="Nodes")).to_be_focused()


def test_api_unreachable_shows_a_banner_and_the_console_recovers(console: Console, stack: Stack):
    page = console.page
    console.login()
    expect(card(console, "alpha")).to_be_visible()
    banner = page.locator("#banner")
    expect(banner).to_be_hidden()
    stack.stop_proxy()
    expect(banner).to_have_text("API unreachable — retrying…")  # the event stream dropped
    console.shot("api-unreachable", full_page=False)
    stack.start_proxy()  # same data directory: the session is still valid
    expect(banner).to_be_hidden(timeout=15_000)
    expect(card(console, "alpha")).to_be_visible()
    assert not page.get_by_role("heading", name="Log in to Aivonx Proxy").is_visible()  # the session survived
