"""The worker's table state: write-back to RocksDB and changelogs, bulk restore."""
