"""The exporter service: scheduled, partitioned exports of inserted rows to S3 and SFTP with delivery reports."""
