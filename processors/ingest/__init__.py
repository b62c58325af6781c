"""Step 1 of the data flow: a touchpoint's bytes become a validated event, its identifiers and routing
key, or a dead-letter record."""
