"""The gateway: the public API, authentication, and the coordinator of two-phase commits."""
