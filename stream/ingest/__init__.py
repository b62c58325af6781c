"""Touchpoints into Kafka: the Segment-compatible HTTP collector and the JSON-lines producer."""
