"""Kafka plumbing: confluent-kafka clients, security settings, topic configs, the outbox."""
