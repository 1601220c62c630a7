"""paygate-relay: every event of the gateway's database, published to RabbitMQ (docs/events.md)."""
