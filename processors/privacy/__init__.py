"""Privacy requests (export, erase) as records of the identity protocol."""
