"""The transform service: a faust-streaming worker whose sink writes storage events into Postgres."""
