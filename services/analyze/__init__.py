"""rcs-analyze: statistics, continuity checks, plots, exports and synthetic data for Parquet recordings."""
