"""Entrypoints: configuration, wiring, the Lambda handler, the local runner and the CLI."""
