"""Coverage-guided fuzzing of rmfproxy's parsers (see fuzz/README.md)."""
