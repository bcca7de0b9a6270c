"""`make bench`: the state endpoint, ingestion and lookups measured against the framework floor."""
