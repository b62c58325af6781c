"""Journeys: multi-step customer paths advanced on events and deadlines."""
