"""The local platform behind `headrace up`: the embedded broker and Postgres, and the service processes."""
