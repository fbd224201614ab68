"""Classic or sharded pub/sub: the queue's channels on a single Redis, or on a Redis
Cluster (SPUBLISH and SSUBSCRIBE, Redis 7: a channel's messages stay on the shard that
serves its slot, where a classic PUBLISH is sent to every node of the cluster over its
bus). Both count, in a publish's reply, the subscriptions of the node that ran it,
which is where every worker subscribes (app/adapters/redis_cluster.py)."""

from __future__ import annotations

from app.core.queue.scripts import decoded


class PubSubCommands:
    def __init__(self, sharded: bool) -> None:
        self.sharded = sharded
        self.publish_command = "SPUBLISH" if sharded else "PUBLISH"
        # the types of redis-py's pub/sub messages: a message, a confirmation
        self.message = "smessage" if sharded else "message"
        self.subscribed = "ssubscribe" if sharded else "subscribe"
        self.unsubscribed = "sunsubscribe" if sharded else "unsubscribe"

    def ended(self, message: dict, channel: str) -> bool:
        """Is `message` Redis ending the subscription to `channel`, unasked (a Redis
        Cluster's slot moved to another shard, or its master became a replica)?"""
        return message["type"] == self.unsubscribed and decoded(message["channel"]) == channel

    def publish(self, client, channel: str, message) -> int:
        """On a client or a pipeline: how many subscriptions got it."""
        return client.execute_command(self.publish_command, channel, message)

    def subscribe(self, pubsub, *channels: str) -> None:
        (pubsub.ssubscribe if self.sharded else pubsub.subscribe)(*channels)

    def unsubscribe(self, pubsub, *channels: str) -> None:
        (pubsub.sunsubscribe if self.sharded else pubsub.unsubscribe)(*channels)

    def subscribers(self, client, *channels: str) -> list[int]:
        """How many subscriptions each channel has (on the node asked)."""
        reply = client.execute_command("PUBSUB", "SHARDNUMSUB" if self.sharded else "NUMSUB",
                                       *channels)
        counts = reply[1::2] if reply and not isinstance(reply[0], tuple | list) else [
            count for _, count in reply]
        return [int(count) for count in counts]

    def script(self, text: str) -> str:
        """A Lua script whose PUBLISHes are this kind's."""
        return text.replace("redis.call('PUBLISH'", f"redis.call('{self.publish_command}'")


CLASSIC = PubSubCommands(sharded=False)
SHARDED = PubSubCommands(sharded=True)
