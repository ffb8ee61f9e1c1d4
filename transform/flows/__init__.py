"""Dataflows in the transform service: the runner, the scheduler, run history and the /api/flows routes."""
