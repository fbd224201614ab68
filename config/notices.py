"""Library notices an operator cannot act on, kept out of every command's output.

eventlet announces its maintenance mode on import, gunicorn its eventlet worker's: the
choice and its exit path are in docs/deployment.md, and the notices buried the lines
that matter (at each worker's boot, at each `flask emit`). Called before anything
imports eventlet: by config/gunicorn.conf.py and by the app package.
"""

import warnings


def silence_library_notices() -> None:
    warnings.filterwarnings("ignore", message=r"\s*Eventlet is deprecated")
    warnings.filterwarnings("ignore", message=r"The eventlet worker is deprecated")
    warnings.filterwarnings("ignore", message=r"Using fork\(\) is a bad idea")
