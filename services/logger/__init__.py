"""Logger service: every telemetry sample and event to Parquet, nothing lost (issue [3/4]; not built yet)."""
