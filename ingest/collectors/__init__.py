"""Collectors: pull batches from Postgres, SFTP/S3 files or HTTP APIs into storages, on a schedule, with cursors."""
