"""Step 2: the identity graph as a pure state machine (links, merges, the over-merge guard) and which
partition owns which key."""
