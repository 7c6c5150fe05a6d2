"""Central logs: one JetStream stream, structured records, query, live tail, daily archives (see README.md)."""
