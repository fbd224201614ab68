"""WSGI entry point: `gunicorn -c config/gunicorn.conf.py` loads `wsgi:app`.

Settings come from the environment (and `.env`); see config/settings.py.
"""

from app import create_app

app = create_app()
