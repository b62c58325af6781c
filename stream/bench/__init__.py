"""`make bench`: the benchmark run, baseline apps, purchase log, seeding, segment cost."""
