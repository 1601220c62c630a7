"""The relay's broker: one AMQP 0-9-1 connection to RabbitMQ, a confirming channel, and the
exchange events are published to.

Every operation has a deadline (timeout_s): connecting, declaring the exchange, and a
batch's publisher confirms. Whatever goes wrong with the broker (refused, closed, a
timeout, a negative confirm) is translated here, in one place, into BrokerUnavailable,
whose message never holds the URL's password; the relay then drops the connection and
connects again with backoff. No publication is retried here: a message whose confirm did
not come may still have reached the broker, so the relay publishes it again later (at
least once), and consumers de-duplicate by message id.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime
import urllib.parse
from collections.abc import Sequence

import aio_pika
from aio_pika.abc import AbstractChannel, AbstractConnection, AbstractExchange
from aio_pika.exceptions import CONNECTION_EXCEPTIONS

from paygate.relay.message import APP_ID, CONTENT_TYPE, Outgoing

CONNECTION_NAME_PREFIX = "paygate-relay"


class BrokerUnavailable(Exception):
    """The broker could not be reached or did not confirm in time; the message says why."""


def redacted(url: str) -> str:
    """The AMQP URL without its password, for logs: amqp://guest:***@host:5672/."""
    parts = urllib.parse.urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.rpartition("@")
    return urllib.parse.urlunsplit(parts._replace(netloc=f"{parts.username}:***@{netloc[2]}"))


@dataclasses.dataclass(frozen=True)
class Published:
    """What a batch's publication came to: the rows the broker confirmed, and why the rest
    were not (None: every message was confirmed)."""

    confirmed: list[int]
    failure: BrokerUnavailable | None = None


class Broker:
    def __init__(self, url: str, exchange: str, *, timeout_s: float, name: str) -> None:
        self._url = url
        self._exchange_name = exchange
        self._timeout_s = timeout_s
        self._name = name
        self._connection: AbstractConnection | None = None
        self._channel: AbstractChannel | None = None
        self._exchange: AbstractExchange | None = None

    @property
    def where(self) -> str:
        return redacted(self._url)

    @property
    def connected(self) -> bool:
        connection = self._connection
        return self._exchange is not None and connection is not None and not connection.is_closed

    async def connect(self) -> None:
        """Connect, open a channel with publisher confirms, and declare the exchange: a
        durable topic exchange, so that it and its bindings outlive a broker restart."""
        await self.close()
        try:
            async with asyncio.timeout(self._timeout_s):
                self._connection = await aio_pika.connect(
                    self._url,
                    timeout=self._timeout_s,
                    client_properties={"connection_name": f"{CONNECTION_NAME_PREFIX}-{self._name}"},
                )
                self._channel = await self._connection.channel(publisher_confirms=True)
                self._exchange = await self._channel.declare_exchange(
                    self._exchange_name, aio_pika.ExchangeType.TOPIC, durable=True
                )
        except (TimeoutError, *CONNECTION_EXCEPTIONS) as exc:
            await self.close()
            raise self._unavailable("cannot connect", exc) from None

    async def publish(self, messages: Sequence[Outgoing]) -> Published:
        """Publish the messages, in order, and wait up to timeout_s for their confirms."""
        exchange = self._exchange
        if exchange is None or not self.connected:
            return Published([], BrokerUnavailable("not connected"))
        tasks = [
            asyncio.create_task(exchange.publish(amqp_message(m), m.routing_key, mandatory=False))
            for m in messages
        ]
        try:
            done, pending = await asyncio.wait(tasks, timeout=self._timeout_s)
        finally:  # on a timeout, and when the relay stops meanwhile
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        confirmed = [m.id for m, task in zip(messages, tasks, strict=True) if _confirmed(task)]
        if len(confirmed) == len(messages):
            return Published(confirmed)
        error = next(
            (t.exception() for t in tasks if t in done and t.exception() is not None), None
        )
        if error is None:
            failure = BrokerUnavailable(
                f"{len(pending)} of {len(messages)} confirms did not come in {self._timeout_s:g} s"
            )
        else:
            failure = self._unavailable("publication failed", error)
        return Published(confirmed, failure)

    async def close(self) -> None:
        connection, self._connection = self._connection, None
        self._channel = self._exchange = None
        if connection is not None and not connection.is_closed:
            try:
                async with asyncio.timeout(self._timeout_s):
                    await connection.close()
            except (TimeoutError, *CONNECTION_EXCEPTIONS):
                pass  # gone already: nothing of ours is left to close

    def _unavailable(self, what: str, exc: BaseException) -> BrokerUnavailable:
        text = str(exc) or type(exc).__name__
        password = urllib.parse.urlsplit(self._url).password
        if password:
            text = text.replace(password, "***")
        return BrokerUnavailable(f"{what}: {type(exc).__name__}: {text}")


def _confirmed(task: asyncio.Task[object]) -> bool:
    return task.done() and not task.cancelled() and task.exception() is None


def amqp_message(message: Outgoing) -> aio_pika.Message:
    """Persistent (delivery mode 2): a durable queue keeps it across a broker restart."""
    return aio_pika.Message(
        message.body,
        content_type=CONTENT_TYPE,
        delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
        message_id=message.message_id,
        type=message.routing_key,
        app_id=APP_ID,
        timestamp=datetime.datetime.fromtimestamp(message.create_time_us / 1e6, datetime.UTC),
    )
