"""The in-process relay tests again, with the gateway (and the banks) on PostgreSQL: the
relay reads the gateway's schema while payments commit concurrently, where an event's id
can commit after a larger one (test_inproc_relay.py's own functions, on servers of their
own; skipped without a reachable PostgreSQL or RabbitMQ, with the reason)."""

from __future__ import annotations

import pathlib
from collections.abc import Iterator

import pytest
import test_inproc_relay
from pgtest import Schemas, require_postgres
from servers import Servers
from suite import BANKS, GATEWAY

amqp = test_inproc_relay.amqp
channel = test_inproc_relay.channel
test_real_payments_reach_a_bound_queue_once_each_as_the_database_holds_them = (
    test_inproc_relay.test_real_payments_reach_a_bound_queue_once_each_as_the_database_holds_them
)
test_two_relays_at_once_publish_each_event_once_and_hand_over_the_lease = (
    test_inproc_relay.test_two_relays_at_once_publish_each_event_once_and_hand_over_the_lease
)


@pytest.fixture(scope="module")
def suite(tmp_path_factory: pytest.TempPathFactory, certs_dir: pathlib.Path) -> Iterator[Servers]:
    schemas = Schemas(require_postgres())
    try:
        urls = {program: schemas.url_for(program).url for program in (GATEWAY, *BANKS)}
        servers = Servers.start(
            tmp_path_factory.mktemp("inproc-relay-postgres"), certs_dir, database_urls=urls
        )
        try:
            yield servers
        finally:
            servers.stop()
    finally:
        schemas.close()
