"""The ingest service: the HTTP push API that turns pushed JSON into events on storages' ingest topics."""
