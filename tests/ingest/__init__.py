"""Tests of the ingest service: the HTTP push API over real HTTP, against a real broker and Postgres."""
