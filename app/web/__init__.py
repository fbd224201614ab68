"""The demo page at `/`: sign in, rooms, messages, connection state, an admin panel.

Plain HTML, CSS and JS from this package (templates/, static/), no build step. The
Socket.IO client is the dist file of the socket.io-client pinned in web/package.json,
committed in static/vendor/ (`make web-vendor` refreshes it), so `make run` and the
image need only Python and the page never loads code from another origin.

At /admin-ui/, the official Socket.IO Admin UI, vendored the same way (app/web/admin_ui/)
and fed by the /admin-ui namespace (app/sockets/admin_ui.py).
"""

from __future__ import annotations

from pathlib import Path

from flask import Blueprint, Response, redirect, render_template

bp = Blueprint("web", __name__, template_folder="templates", static_folder="static",
               static_url_path="/assets")

# The page runs only its own files: no inline script or style (so an injected <script>
# or style attribute does nothing), no other origin, no framing. connect-src 'self'
# also covers ws(s):// to the same host (CSP Level 3), which the Socket.IO client uses.
CONTENT_SECURITY_POLICY = "; ".join((
    "default-src 'none'",
    "script-src 'self'",
    "style-src 'self'",
    "img-src 'self'",
    "connect-src 'self'",
    "base-uri 'none'",
    "form-action 'none'",
    "frame-ancestors 'none'",
))


@bp.get("/")
def index():
    return render_template("index.html")


@bp.after_request
def content_security_policy(response):
    response.headers.setdefault("Content-Security-Policy", CONTENT_SECURITY_POLICY)
    return response


# --- the Socket.IO Admin UI at /admin-ui/ ------------------------------------------
# The npm package's build (app/web/admin_ui/, `make web-vendor`), served as released
# but for its page's links to other origins: the icon font is the vendored one, the
# Roboto font is left out (the UI falls back to the system's), and a script of ours
# first points its connection form at this server's /admin-ui namespace.
ADMIN_UI = Path(__file__).parent / "admin_ui"
_ADMIN_UI_LINKS = (
    ('<link rel="stylesheet" href="https://fonts.googleapis.com/css?family=Roboto:100,300,400,'
     '500,700,900">', ""),
    ("https://cdn.jsdelivr.net/npm/@mdi/font@latest/css/materialdesignicons.min.css",
     "mdi/css/materialdesignicons.min.css"),
    ('<script src="js/chunk-vendors', '<script src="/assets/admin-ui-setup.js"></script>'
                                      '<script src="js/chunk-vendors'),
)
# Vuetify writes its theme into a <style> element: inline styles are allowed here.
ADMIN_UI_POLICY = CONTENT_SECURITY_POLICY.replace(
    "style-src 'self'", "style-src 'self' 'unsafe-inline'; font-src 'self'").replace(
    "img-src 'self'", "img-src 'self' data:")

admin_ui_bp = Blueprint("admin_ui", __name__, static_folder="admin_ui",
                        static_url_path="/admin-ui")


def admin_ui_page() -> str:
    page = (ADMIN_UI / "index.html").read_text()
    for link, replacement in _ADMIN_UI_LINKS:
        if link not in page:  # a new release: `make web-vendor` needs this list updated
            raise RuntimeError(f"app/web/admin_ui/index.html no longer has {link!r}")
        page = page.replace(link, replacement)
    return page


@admin_ui_bp.get("/admin-ui/")
def admin_ui():
    return Response(admin_ui_page(), mimetype="text/html")


@admin_ui_bp.get("/admin-ui")
def admin_ui_slash():
    return redirect("/admin-ui/", code=308)


@admin_ui_bp.after_request
def admin_ui_policy(response):
    response.headers.setdefault("Content-Security-Policy", ADMIN_UI_POLICY)
    return response
