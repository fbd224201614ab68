"""The demo page at / in a real browser: chat between two pages, the admin panel's
socket, a kick, a server restart mid-session."""

from __future__ import annotations

import re
import time
import uuid

from playwright.sync_api import expect

from tests.browser.pages import PHONE, enter, message, say, send, sign_in
from tests.helpers import wait_for

STATUS = "#status"


def test_two_users_chat_in_a_room(server, open_page, screenshot):
    alice = open_page(server.url)
    bob = open_page(server.url, viewport=PHONE)
    enter(alice, "alice", "general")
    enter(bob, "bob", "general")

    expect(say(alice, bob, "Hi Bob, the demo page works").locator(".sender")).to_have_text("alice")
    expect(say(bob, alice, "Hi Alice! Same room, two pages").locator(".sender")).to_have_text("bob")
    # each page shows its own message once (from the ack: the server skips the sender)
    expect(message(alice, "Hi Bob, the demo page works")).to_have_class(re.compile(r"\bmine\b"))
    expect(message(alice, "Hi Bob, the demo page works")).to_have_count(1)
    # "In this room": the join ack's presence, then presence events (bob came after alice)
    for page in (alice, bob):
        expect(page.locator("#presence li")).to_contain_text(["alice", "bob"])

    screenshot(alice, "chat-laptop")
    screenshot(bob, "chat-phone")
    # a phone width shows the page without a horizontal scrollbar
    assert bob.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]


def test_a_non_admin_cannot_reach_the_admin_socket(server, open_page, screenshot):
    alice = open_page(server.url, viewport=PHONE)
    screenshot(alice, "signin-phone")
    sign_in(alice, "alice")
    expect(alice.locator("#admin")).to_be_hidden()
    # Hiding the panel is cosmetic: the server refuses /admin to alice's token. Asked
    # from the page with its own socket.io-client, as a curious user would.
    refusal = alice.evaluate("""async () => {
        const response = await fetch("/api/auth/token", {method: "POST",
            headers: {"Content-Type": "application/json"},
            body: JSON.stringify({username: "alice", password: "alice-password"})});
        const {access_token} = await response.json();
        return await new Promise((resolve) => {
            const admin = io("/admin", {forceNew: true, transports: ["websocket"],
                                        auth: {token: access_token}});
            admin.on("connect", () => { admin.disconnect(); resolve({connected: true}); });
            admin.on("connect_error", (err) => { admin.disconnect(); resolve(err.data); });
        });
    }""")
    assert refusal["code"] == "forbidden", refusal
    # while the admin's own page gets the panel, connected
    admin = open_page(server.url)
    sign_in(admin, "admin")
    expect(admin.locator("#admin")).to_be_visible()
    expect(admin.locator("#admin-status")).to_have_text("connected")


def test_an_admin_kicks_a_user_and_the_page_says_so(server, open_page, screenshot):
    admin = open_page(server.url)
    bob = open_page(server.url, viewport=PHONE)
    enter(admin, "admin", "lobby")
    enter(bob, "bob", "lobby")
    say(bob, admin, "buy cheap watches")

    admin.locator("#broadcast-text").fill("Be nice, please")
    admin.get_by_role("button", name="Broadcast").click()
    expect(bob.locator("#messages .announcement .text")).to_have_text("Be nice, please")

    admin.locator("#kick-user").fill("bob")
    admin.locator("#kick-reason").fill("spamming")
    admin.get_by_role("button", name="Kick").click()
    expect(admin.locator("#admin-result")).to_have_text(re.compile(r"^kicked bob: [1-9]\d* socket"))
    expect(bob.locator(STATUS)).to_have_attribute("data-state", "kicked")
    expect(bob.locator("#notice")).to_contain_text("You were kicked: spamming.")
    expect(bob.locator("#message-input")).to_be_disabled()

    admin.get_by_role("button", name="refresh").click()
    expect(admin.locator("#stats")).to_contain_text("chat connections")
    screenshot(admin, "admin-laptop")
    screenshot(bob, "kicked-phone")
    # a kick is not a ban (docs/events.md): the page can reconnect with its token
    bob.get_by_role("button", name="Reconnect").click()
    expect(bob.locator("#message-input")).to_be_enabled()
    say(bob, admin, "sorry")


def test_the_page_reconnects_after_a_server_restart(start_own_server, redis_server, open_page,
                                                    screenshot):
    # Two servers sharing Redis: alice's restarts; bob's keeps the room going meanwhile.
    restarted = start_own_server(MESSAGE_QUEUE_URL=redis_server.url)
    other = start_own_server(MESSAGE_QUEUE_URL=redis_server.url)
    alice = open_page(restarted.url)
    bob = open_page(other.url)
    enter(alice, "alice", "restart")
    enter(bob, "bob", "restart")
    say(bob, alice, "before the restart")

    restarted.stop()
    expect(alice.locator(STATUS)).to_have_attribute("data-state", "reconnecting")
    screenshot(alice, "reconnecting-laptop")
    send(bob, "while you were away")
    restarted.start()

    # socket.io-client's backoff grows to 5 s between attempts: allow a few of them
    expect(alice.locator(STATUS)).to_have_attribute("data-state", "connected", timeout=30_000)
    expect(alice.locator(STATUS)).to_have_text(re.compile("reconnected|recovered"))
    expect(alice.locator("#message-input")).to_be_enabled()
    # Messages sent while the page was away: shown only where the server keeps history
    # (the join ack's `history`) or recovers the connection's state. Without either,
    # the page says it cannot show them.
    if alice.locator("#messages").get_attribute("data-history") == "yes" or \
            "recovered" in alice.locator(STATUS).inner_text():
        expect(message(alice, "while you were away")).to_have_class(re.compile(r"\bmissed\b"))
        expect(alice.locator("#notice")).to_have_attribute("data-missed", "1")
    else:
        expect(message(alice, "while you were away")).to_have_count(0)
        expect(alice.locator("#notice")).to_contain_text("messages sent while you were away are not shown")

    # the page re-joined its room: what is sent after the restart arrives
    say(bob, alice, "after the restart")
    say(alice, bob, "back again")
    screenshot(alice, "reconnected-laptop")



def test_the_page_renews_its_token_and_stays_connected(start_own_server, open_page):
    ttl = 4
    server = start_own_server(JWT_TTL_SECONDS=str(ttl), TOKEN_WARNING_SECONDS="2",
                              JWT_LEEWAY_SECONDS="0")
    alice, bob = open_page(server.url), open_page(server.url)
    enter(alice, "alice", "general")
    enter(bob, "bob", "general")
    issued_by = time.time()
    # token_expiring -> POST /api/auth/refresh -> `refresh` on the live socket
    wait_for(lambda: time.time() > issued_by + ttl + 1.5, timeout=ttl + 5,
             message="the first token to expire")
    expect(alice.locator(STATUS)).to_have_attribute("data-state", "connected")
    say(alice, bob, "still here after my first token expired")


def test_a_session_that_cannot_be_renewed_goes_back_to_sign_in(start_own_server, open_page):
    # refresh tokens that expire first: the renewal at the warning fails
    server = start_own_server(JWT_TTL_SECONDS="4", TOKEN_WARNING_SECONDS="2",
                              REFRESH_TTL_SECONDS="1", JWT_LEEWAY_SECONDS="0")
    alice = open_page(server.url, allow=("status of 401",))  # the refused refresh
    enter(alice, "alice", "general")
    expect(alice.locator("#signin")).to_be_visible(timeout=10_000)
    expect(alice.locator("#signin-error")).to_contain_text("(token_expired)")
    expect(alice.locator(STATUS)).to_have_attribute("data-state", "signed-out")
    sign_in(alice, "alice")  # and a new token gets back in


def test_a_page_away_for_more_than_a_join_ack_of_messages_gets_them_all(
        start_own_server, redis_server, open_page):
    """(The page re-joined without `since`: past HISTORY_ON_JOIN missed messages it
    showed only the last ones.) It re-joins after its last message and pages while the
    ack says `more`; no recovery here, so the join is the only way back."""
    env = {"MESSAGE_QUEUE_URL": redis_server.url, "HISTORY_ON_JOIN": "3",
           "RECOVERY_WINDOW_SECONDS": "0"}
    restarted, other = start_own_server(**env), start_own_server(**env)
    room = f"paging-{uuid.uuid4().hex[:8]}"
    alice, bob = open_page(restarted.url), open_page(other.url)
    enter(alice, "alice", room)
    enter(bob, "bob", room)
    say(bob, alice, "before")

    restarted.stop()
    expect(alice.locator(STATUS)).to_have_attribute("data-state", "reconnecting")
    away = [f"away {n}" for n in range(8)]
    for text in away:
        send(bob, text)
    restarted.start()

    expect(alice.locator(STATUS)).to_have_attribute("data-state", "connected", timeout=30_000)
    for text in away:
        expect(message(alice, text)).to_have_class(re.compile(r"\bmissed\b"))
    expect(message(alice, "before")).to_have_count(1)
