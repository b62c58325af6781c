"""`tusk demo` and the synthetic data it, the tests and the benchmark use."""
