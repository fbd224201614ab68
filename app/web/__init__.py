"""The demo page at `/`: sign in, rooms, messages, connection state, an admin panel.

Plain HTML, CSS and JS from this package (templates/, static/), no build step. The
Socket.IO client is the dist file of the socket.io-client pinned in web/package.json,
committed in static/vendor/ (`make web-vendor` refreshes it), so `make run` and the
image need only Python and the page never loads code from another origin.
"""

from __future__ import annotations

from flask import Blueprint, render_template

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
