"""RabbitMQ for tests: the broker named by PAYGATE_TEST_AMQP_URL, and throwaway queues.

    PAYGATE_TEST_AMQP_URL=amqp://guest:guest@127.0.0.1:5672/ pytest   (the default)

Tests that need the broker call `require_rabbitmq()`, which skips them with the reason when
it does not answer. Each test publishes to an exchange of its own (`unique_exchange()`),
so that tests running side by side, or other users of the broker, never see each other's
messages, and `Bound` deletes the exchange and its queues when the test is done.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import uuid

import aio_pika
import pytest
from aio_pika.abc import AbstractIncomingMessage

AMQP_URL_ENV = "PAYGATE_TEST_AMQP_URL"
DEFAULT_URL = "amqp://guest:guest@127.0.0.1:5672/"
CONNECT_TIMEOUT_S = 3.0
OPERATION_TIMEOUT_S = 10.0


def amqp_url() -> tuple[str | None, str]:
    """The test broker's URL if it answers, else None and why not."""
    url = os.environ.get(AMQP_URL_ENV) or DEFAULT_URL

    async def probe() -> None:
        connection = await aio_pika.connect(url, timeout=CONNECT_TIMEOUT_S)
        await connection.close()

    try:
        asyncio.run(asyncio.wait_for(probe(), CONNECT_TIMEOUT_S * 2))
    except Exception as exc:
        where = url.rpartition("@")[2]
        return None, f"RabbitMQ at {where} ({AMQP_URL_ENV}) is not reachable: {exc!r}"
    return url, ""


def require_rabbitmq() -> str:
    url, reason = amqp_url()
    if url is None:
        pytest.skip(reason)
    return url


def unique_exchange(name: str) -> str:
    return f"paygate.test.{name}.{uuid.uuid4().hex[:8]}"


@dataclasses.dataclass
class Received:
    """A message as a consumer got it."""

    message_id: str
    routing_key: str
    body: bytes
    content_type: str | None
    delivery_mode: int
    type: str | None
    app_id: str | None

    @classmethod
    def of(cls, message: AbstractIncomingMessage) -> Received:
        return cls(
            message_id=message.message_id or "",
            routing_key=message.routing_key or "",
            body=message.body,
            content_type=message.content_type,
            delivery_mode=int(message.delivery_mode or 0),
            type=message.type,
            app_id=message.app_id,
        )


@dataclasses.dataclass
class Bound:
    """Durable queues bound to a durable topic exchange (declared as the relay declares it),
    each with its binding key; `close()` deletes them all."""

    url: str
    exchange: str
    bindings: dict[str, str]  # queue name -> binding key

    @classmethod
    async def declare(cls, url: str, exchange: str, bindings: dict[str, str]) -> Bound:
        bound = cls(url, exchange, {f"{exchange}.{q}": key for q, key in bindings.items()})
        async with asyncio.timeout(OPERATION_TIMEOUT_S):
            connection = await aio_pika.connect(url, timeout=CONNECT_TIMEOUT_S)
            async with connection:
                channel = await connection.channel()
                declared = await channel.declare_exchange(
                    exchange, aio_pika.ExchangeType.TOPIC, durable=True
                )
                for queue_name, key in bound.bindings.items():
                    queue = await channel.declare_queue(queue_name, durable=True)
                    await queue.bind(declared, key)
        return bound

    def queue(self, name: str) -> str:
        return f"{self.exchange}.{name}"

    async def drain(self, name: str, *, timeout_s: float = OPERATION_TIMEOUT_S) -> list[Received]:
        """Every message the queue holds now, acknowledged (the queue is left empty)."""
        received: list[Received] = []
        async with asyncio.timeout(timeout_s):
            connection = await aio_pika.connect(self.url, timeout=CONNECT_TIMEOUT_S)
            async with connection:
                channel = await connection.channel()
                queue = await channel.get_queue(self.queue(name))
                while (message := await queue.get(fail=False)) is not None:
                    received.append(Received.of(message))
                    await message.ack()
        return received

    async def close(self) -> None:
        async with asyncio.timeout(OPERATION_TIMEOUT_S):
            connection = await aio_pika.connect(self.url, timeout=CONNECT_TIMEOUT_S)
            async with connection:
                channel = await connection.channel()
                for queue_name in self.bindings:
                    await channel.queue_delete(queue_name)
                await channel.exchange_delete(self.exchange)


def by_message_id(received: list[Received]) -> dict[str, list[Received]]:
    found: dict[str, list[Received]] = {}
    for message in received:
        found.setdefault(message.message_id, []).append(message)
    return found


__all__ = ["Bound", "Received", "amqp_url", "by_message_id", "require_rabbitmq", "unique_exchange"]
