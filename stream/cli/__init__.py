"""The `tusk` command line and the reference-docs generator."""
