"""The HTTP API every worker serves (profiles, segments, explain, journeys, quarantine, predict), its
token check and the operator console."""
