"""Flask CLI commands: `flask --app wsgi emit ROOM TEXT` reaches clients from outside.

The command uses a write-only client manager: it publishes on the message queue
and every worker delivers to its own clients, so it needs MESSAGE_QUEUE_URL.
"""

from __future__ import annotations

import json

import click
from flask import Flask
from flask.cli import with_appcontext
from redis.exceptions import RedisError

from app.core.chat import SYSTEM_SENDER, post_message, post_model
from app.core.errors import AppError
from app.core.queue import create_manager
from app.core.schema import validate
from app.services import get_services


@click.command("emit")
@click.argument("room")
@click.argument("text")
@click.option("--sender", default=SYSTEM_SENDER["name"], show_default=True,
              help="Sender name shown to clients.")
@with_appcontext
def emit_command(room: str, text: str, sender: str) -> None:
    """Post TEXT to chat ROOM on every worker, through the message queue."""
    settings = get_services().settings
    try:
        payload = validate(post_model(settings.max_message_length), {"room": room, "text": text})
        manager = create_manager(settings, write_only=True,
                                 logged=get_services().manager.log.logged)
        if manager.listeners() == 0:
            raise click.ClickException(
                f"no server is subscribed to channel {manager.channel!r} on the message queue: "
                "nobody would receive the message (is the app running with this MESSAGE_QUEUE_URL?)")
        message = post_message(manager, payload["room"], payload["text"],
                               {"id": SYSTEM_SENDER["id"], "name": sender},
                               history=get_services().history)
    except AppError as exc:
        raise click.ClickException(f"{exc.code}: {exc.message} {exc.details or ''}".strip()) from exc
    except (RuntimeError, RedisError) as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(json.dumps(message))


def register_commands(app: Flask) -> None:
    app.cli.add_command(emit_command)
