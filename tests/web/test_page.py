"""The demo page's files (app/web/): served at /, under a strict Content-Security-Policy,
and the vendored socket.io-client is byte for byte the pinned npm package's file; the
Socket.IO Admin UI at /admin-ui/ too, loading nothing from another origin."""

from __future__ import annotations

import json
from html.parser import HTMLParser
from pathlib import Path

from app.web import ADMIN_UI, CONTENT_SECURITY_POLICY
from tests.helpers import ROOT

WEB = ROOT / "web"
VENDORED = ROOT / "app" / "web" / "static" / "vendor" / "socket.io.min.js"


class Tags(HTMLParser):
    """Every start tag of a page, as (tag, attributes)."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))


def page_tags(http) -> list[tuple[str, dict[str, str | None]]]:
    parser = Tags()
    parser.feed(http.get("/").get_data(as_text=True))
    return parser.tags


def test_the_page_is_served_at_the_root_with_a_strict_policy(http):
    response = http.get("/")
    assert response.status_code == 200 and response.mimetype == "text/html"
    policy = response.headers["Content-Security-Policy"]
    assert policy == CONTENT_SECURITY_POLICY
    directives = dict(part.split(" ", 1) for part in policy.split("; "))
    assert directives["default-src"] == "'none'"
    for name in ("script-src", "style-src", "connect-src"):
        assert directives[name] == "'self'", name  # no 'unsafe-inline', no other origin
    # the app's other security headers still apply
    assert response.headers["X-Frame-Options"] == "DENY"
    assert response.headers["X-Content-Type-Options"] == "nosniff"


def test_the_page_has_no_inline_code_and_loads_only_its_own_files(http):
    tags = page_tags(http)
    scripts = [attrs for tag, attrs in tags if tag == "script"]
    assert scripts and all(attrs.get("src") for attrs in scripts)  # inline scripts are blocked
    assert not [tag for tag, _ in tags if tag == "style"]
    assert not [tag for tag, attrs in tags if "style" in attrs or
                any(name.startswith("on") for name in attrs)]
    urls = [attrs.get("src") or attrs.get("href") for tag, attrs in tags
            if tag in ("script", "link")]
    assert "/assets/vendor/socket.io.min.js" in urls
    for url in urls:
        assert url.startswith("/") and not url.startswith("//"), url
        response = http.get(url)
        assert response.status_code == 200, url
        assert response.headers["Content-Security-Policy"] == CONTENT_SECURITY_POLICY


def test_the_api_keeps_its_own_headers(http):
    # the page's policy is the page's: JSON responses are unchanged
    assert "Content-Security-Policy" not in http.get("/api/health").headers


def test_the_client_is_pinned_to_one_version():
    package = json.loads((WEB / "package.json").read_text())
    lock = json.loads((WEB / "package-lock.json").read_text())
    bench = json.loads((ROOT / "bench" / "package.json").read_text())
    pinned = package["dependencies"]["socket.io-client"]
    assert pinned == lock["packages"]["node_modules/socket.io-client"]["version"]
    # one client version in the project: the bench's load generator and the page
    assert pinned == bench["dependencies"]["socket.io-client"]


def test_the_vendored_files_are_the_pinned_packages_files(web_modules):
    dist = web_modules / "node_modules" / "socket.io-client" / "dist" / "socket.io.min.js"
    assert dist.read_bytes() == VENDORED.read_bytes(), "run `make web-vendor`"
    # the Admin UI's build (without source maps) and its icon font, file for file
    modules = web_modules / "node_modules"
    expected = {path.relative_to(modules / "@socket.io/admin-ui/ui/dist"): path
                for path in (modules / "@socket.io/admin-ui/ui/dist").rglob("*")
                if path.is_file() and path.suffix != ".map"}
    for name in ("css/materialdesignicons.min.css", "fonts/materialdesignicons-webfont.woff2"):
        expected[Path("mdi", name)] = modules / "@mdi/font" / name
    vendored = {path.relative_to(ADMIN_UI): path for path in ADMIN_UI.rglob("*") if path.is_file()}
    assert sorted(vendored) == sorted(expected), "run `make web-vendor`"
    for name, path in expected.items():
        assert vendored[name].read_bytes() == path.read_bytes(), f"{name}: run `make web-vendor`"


def test_the_admin_ui_loads_nothing_from_another_origin(http):
    page = http.get("/admin-ui/")
    assert page.status_code == 200
    parser = Tags()
    parser.feed(page.get_data(as_text=True))
    urls = [attrs.get("src") or attrs.get("href") for _, attrs in parser.tags
            if attrs.get("src") or attrs.get("href")]
    assert urls and all("//" not in url for url in urls), urls
    for url in urls:  # each served, from here
        assert http.get(url if url.startswith("/") else "/admin-ui/" + url).status_code == 200, url
    assert "frame-ancestors 'none'" in page.headers["Content-Security-Policy"]
    assert http.get("/admin-ui").headers["Location"].endswith("/admin-ui/")
