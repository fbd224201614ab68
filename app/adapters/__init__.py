"""Where the template touches the internals of the libraries it runs on.

python-socketio, python-engineio, gunicorn, eventlet, gevent (and redis-py's error
texts) are used through their public API everywhere else. Where the template needs
more (a step of python-socketio's packet handling, the socket under a green one), the
one module per library here names that internal, and the rest of the code uses the
name given here:

- `socketio_hooks`, `engineio_hooks`: base classes whose public methods stand for the
  library's private ones (`on_event_packet` is `Server._handle_event`). A subclass
  overrides the public name; the library's own calls reach the override directly
  (`hooks.Hooked`: no extra call on a hot path).
- `gunicorn_hooks`, `eventlet_hooks`, `gevent_hooks`, `redis_hooks`: functions.
- `versions`: the releases these were tested with, and the start-up guard that
  refuses any other.

tests/adapters holds a contract test for each hook (it exists, with the signature
relied on, and the library still uses it), and the check that no private name of those
libraries is used outside this package. docs/architecture.md ("Library internals")
says what each hook is for.
"""
