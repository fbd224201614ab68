"""gevent internals the template uses."""

from __future__ import annotations


def os_socket(green):
    """The OS socket under a gevent socket, or None."""
    return getattr(green, "_sock", None)
