"""Step 4: segment rules, the catalog of definitions in force, definition files."""
