"""WSGI entry point: `gunicorn -c config/gunicorn.conf.py` serves `wsgi:application`.

Settings come from the environment (and `.env`); see config/settings.py.
"""

import sys

from app import create_app
from config.settings import SettingsError

try:
    app = create_app()
except SettingsError as exc:
    sys.exit(str(exc))  # the list of problems alone, not inside a traceback
# The WSGI function itself (Socket.IO + Flask): served without the Flask object's
# __call__, one C-level frame less on the parked stack of every WebSocket.
application = app.wsgi_app
