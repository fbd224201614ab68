"""The library releases the adapters here were tested with, and the start-up guard.

Every hook in this package relies on internals that any release may change, so the
server starts only on releases the whole suite passed on (requirements.txt and
requirements-gevent.txt pin them; tests/adapters checks the pins against this table).
"""

from __future__ import annotations

from importlib import metadata

# distribution -> the releases tested. gunicorn's depend on the worker class: 26.0
# removed the eventlet worker, and gevent runs on the newest (requirements-gevent.txt).
TESTED: dict[str, tuple[str, ...]] = {
    "python-socketio": ("5.18.1",),
    "python-engineio": ("4.15.1",),
    "eventlet": ("0.41.3",),
    "gevent": ("26.9.0",),
}
TESTED_GUNICORN: dict[str, tuple[str, ...]] = {
    "eventlet": ("25.3.0",),
    "gevent": ("25.3.0", "27.0.1"),
}
HOW_TO_TEST = ("or test it (make compat, then make test) and add it to "
               "app/adapters/versions.py")


def libraries(async_mode: str) -> list[str]:
    """The libraries whose internals the app uses in `async_mode` (gunicorn aside)."""
    return ["python-socketio", "python-engineio", async_mode]


def untested(async_mode: str) -> dict[str, str]:
    """{distribution: installed release} of the app's libraries at an untested release."""
    installed = {name: metadata.version(name) for name in libraries(async_mode)}
    return {name: release for name, release in installed.items() if release not in TESTED[name]}


def refusal(async_mode: str) -> str | None:
    """Why the app must not start on what is installed, or None."""
    found = untested(async_mode)
    if not found:
        return None
    releases = " and ".join(f"{name} {release}" for name, release in found.items())
    tested = ", ".join(f"{name} {' or '.join(TESTED[name])}" for name in found)
    pins = " ".join(f"{name}=={TESTED[name][-1]}" for name in found)
    verb = "is not a release" if len(found) == 1 else "are not releases"
    return (f"{releases} {verb} the template was tested with ({tested}): "
            f"pin {pins}, {HOW_TO_TEST}")


def gunicorn_refusal(async_mode: str, release: str) -> str | None:
    """Why this gunicorn release cannot serve `async_mode`, or None."""
    if async_mode == "eventlet" and int(release.split(".")[0]) >= 26:
        return (f"ASYNC_MODE=eventlet needs gunicorn 25.x, and {release} is installed "
                "(gunicorn 26.0 removed the eventlet worker): install requirements.txt "
                "(gunicorn==25.3.0), or set ASYNC_MODE=gevent (requirements-gevent.txt)")
    tested = TESTED_GUNICORN[async_mode]
    if release not in tested:
        return (f"gunicorn {release} is not a release the template was tested with for "
                f"ASYNC_MODE={async_mode} ({' or '.join(tested)}): install one of those "
                f"(requirements.txt, requirements-gevent.txt), {HOW_TO_TEST}")
    return None
