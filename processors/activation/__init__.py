"""Step 5: which segment transitions become triggers for which channels, and hashed audience addresses."""
