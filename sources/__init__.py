"""Where trades come from: Kafka, an NDJSON file, the simulator; each hands over raw batches."""
