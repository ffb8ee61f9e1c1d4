"""The web console: server-rendered pages over the services' HTTP APIs, behind a login with the admin token."""
