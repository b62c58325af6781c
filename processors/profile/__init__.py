"""Step 3: the unified profile, how events change it, how two profiles merge, trait trust, aggregates
and computed traits, and why a profile is what it is."""
