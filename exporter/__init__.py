"""The exporter service: scheduled, partitioned exports of inserted rows to S3, SFTP or FTP(S) with delivery reports."""
