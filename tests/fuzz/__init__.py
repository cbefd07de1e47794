"""Coverage-guided fuzzing of rpfs's parsers (targets.py; run with tools/fuzz.py)."""
