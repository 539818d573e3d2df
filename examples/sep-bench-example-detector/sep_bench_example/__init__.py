"""An example sep-bench plugin package: one detector, `blurdiff`, registered by entry point (see pyproject.toml)."""
