"""WSGI entry point: `gunicorn -c config/gunicorn.conf.py` serves `wsgi:application`.

Settings come from the environment (and `.env`); see config/settings.py.
"""

import sys

from app import create_app
from config.settings import SettingsError

try:
    app = create_app()
except SettingsError as exc:
    if "gunicorn" in sys.modules:
        # a worker's refusal (config/gunicorn.conf.py checked the settings already: a
        # library version here): raised, gunicorn reports a worker that failed to boot
        # and stops, where an exit would have it start the worker again and again
        raise
    sys.exit(str(exc))  # `flask --app wsgi`: the list of problems alone, no traceback
# The WSGI function itself (Socket.IO + Flask): served without the Flask object's
# __call__, one C-level frame less on the parked stack of every WebSocket.
application = app.wsgi_app
