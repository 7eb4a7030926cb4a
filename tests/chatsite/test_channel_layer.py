"""The "core" channel layer's Redis connections, as chatsite.settings configures them (real Redis)."""

from __future__ import annotations

import asyncio
import uuid

from channels_redis.core import RedisChannelLayer

from chatsite.settings import base


async def test_a_receive_outlives_the_layers_blocking_pop() -> None:
    """channels_redis waits for a message with a 5 s BZPOPMIN, again and again; redis-py 8's
    default socket timeout (5 s) would end the first wait with TimeoutError instead."""
    host = base._core_layer_host
    assert host["socket_timeout"] > RedisChannelLayer.brpop_timeout
    layer = RedisChannelLayer(hosts=[host], prefix=f"test-layer-{uuid.uuid4().hex[:8]}")
    channel = await layer.new_channel()
    receiver = asyncio.create_task(layer.receive(channel))
    try:
        await asyncio.sleep(layer.brpop_timeout + 1.5)
        assert not receiver.done(), receiver.exception()
        await layer.send(channel, {"type": "chat.hello"})
        assert (await asyncio.wait_for(receiver, 10)) == {"type": "chat.hello"}
    finally:
        receiver.cancel()
        await layer.flush()
        await layer.close_pools()


def test_the_pool_is_larger_than_redis_pys_default() -> None:
    """redis-py 8 caps a pool at 100 connections; 2,000 sockets subscribing at once need more."""
    assert base._core_layer_host["max_connections"] >= 1000
