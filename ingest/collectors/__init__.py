"""Collectors: pull batches from Postgres, SFTP/FTP/S3 files or HTTP APIs into storages, on a schedule, with cursors."""
