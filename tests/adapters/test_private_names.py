"""No private name of python-socketio, python-engineio, gunicorn, eventlet, gevent or PyJWT
is used outside app/adapters (tests/adapters/private_names.py says what counts)."""

from __future__ import annotations

import sys
import textwrap

from tests.adapters.private_names import uses_in, uses_in_tree
from tests.helpers import ROOT


def test_the_template_uses_no_library_private_name_outside_the_adapters():
    uses = uses_in_tree(ROOT, ("app", "config", "wsgi.py"), skip="app/adapters/")
    assert not uses, "use app/adapters for these (or add a hook there):\n" + \
        "\n".join(map(str, uses))


def test_the_check_finds_each_kind_of_use(tmp_path, monkeypatch):
    source = textwrap.dedent('''
        """A docstring naming 'gunicorn.socket' is not a use."""
        import socketio
        from eventlet import tpool
        from engineio.async_drivers import _websocket_wsgi


        class Server(socketio.Server):
            def _handle_connect(self, eio_sid, namespace, data):
                return super()._handle_connect(eio_sid, namespace, data)

            def mine(self, sid):
                self._binary_packet.pop(sid, None)
                self._own = 1


        class Mixin:
            def _send_packet(self, eio_sid, pkt):
                pass


        class Mixed(Mixin, socketio.Server):
            pass


        def elsewhere(environ, server):
            size = tpool._nthreads
            sock = environ["gunicorn.socket"]
            return getattr(server, "_trigger_event"), size, sock
    ''')
    (tmp_path / "planted.py").write_text(source)
    monkeypatch.syspath_prepend(str(tmp_path))
    import planted

    try:
        found = [use.what for use in uses_in({"planted.py": source}, {"planted.py": planted})]
    finally:
        sys.modules.pop("planted", None)
    assert found == [
        "from engineio.async_drivers import _websocket_wsgi",
        "def _handle_connect (overrides a library's private method)",
        "super()._handle_connect (a library's private name)",
        "self._binary_packet (a library's private name)",
        "def _send_packet (overrides a library's private method)",
        "tpool._nthreads (a library's private name)",
        "'gunicorn.socket' (an environ key the libraries pass between them)",
        "getattr(..., '_trigger_event') (a library's private name)",
    ]
