"""Triggers: the app's edges (HTTP, Event Grid, timers). Input is validated here, first."""
