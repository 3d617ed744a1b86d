"""Fixture app that crashes while booting: every worker dies before it is ready."""

raise RuntimeError("boot failed: cannot reach config service (token=abc123)")
