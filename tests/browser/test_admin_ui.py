"""The official Socket.IO Admin UI at /admin-ui/, in Chromium, against two workers.

An admin signs in with the template's own credentials and sees the sockets of both
workers (the UI is fed from every worker over the control bus: app/sockets/admin_ui.py);
a user without the admin role is refused.
"""

from __future__ import annotations

from playwright.sync_api import Page, expect

from tests.helpers import chat_connections, wait_for


def sign_in(page: Page, user: str) -> None:
    """The UI's connection form (opened by its first attempt, refused: no session yet)."""
    expect(page.get_by_label("Server URL")).to_have_value(page.url.split("/admin-ui/")[0])
    page.get_by_label("Username").fill(user)
    page.get_by_label("Password").fill(f"{user}-password")
    page.get_by_role("button", name="Connect").click()


def one_client_per_worker(url: str, connect, admin_token: str) -> list:
    """Two /chat clients, one on each worker (the kernel picks the worker: a client that
    lands beside the first is closed and another one tried)."""
    clients = [connect(url, user="watched0")]
    attempt = 0

    def second_worker_reached() -> bool:
        nonlocal attempt
        attempt += 1
        client = connect(url, user=f"watched{attempt}")
        counts = chat_connections(url, admin_token, 2)
        if sorted(counts.values()) == [1, 1]:
            clients.append(client)
            return True
        client.close()
        wait_for(lambda: sorted(chat_connections(url, admin_token, 2).values()) == [0, 1],
                 message="the extra client to leave")
        return False

    wait_for(second_worker_reached, timeout=60, interval=0, message="a client on each worker")
    return clients


def test_an_admin_sees_the_sockets_of_both_workers(private_redis, start_own_server, connect,
                                                     make_token, open_page, screenshot):
    server = start_own_server(WORKERS="2", TRANSPORTS="websocket", MESSAGE_QUEUE_URL=private_redis.url)
    clients = one_client_per_worker(server.url, connect, make_token("root", "admin"))
    sids = [client.sio.get_sid("/chat") for client in clients]

    page = open_page(server.url + "/admin-ui/")
    sign_in(page, "admin")
    expect(page.get_by_label("Username")).to_be_hidden()  # the form closed: connected
    page.goto(server.url + "/admin-ui/#/servers/")
    expect(page.locator("tbody tr")).to_have_count(2)  # one row per worker
    page.goto(server.url + "/admin-ui/#/sockets/")
    for sid in sids:
        expect(page.get_by_text(sid)).to_be_visible()
    screenshot(page, "admin-ui-sockets")
    # a socket that leaves is gone at the next refresh (ADMIN_UI_INTERVAL)
    clients[1].close()
    expect(page.get_by_text(sids[1])).to_have_count(0)
    expect(page.get_by_text(sids[0])).to_be_visible()


def test_a_user_without_the_admin_role_is_refused(server, open_page):
    page = open_page(server.url + "/admin-ui/")
    sign_in(page, "alice")
    expect(page.get_by_text("requires the 'admin' role")).to_be_visible()
    expect(page.get_by_label("Username")).to_be_visible()  # still asked to sign in
