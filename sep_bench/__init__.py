"""SEP benchmark harness."""
