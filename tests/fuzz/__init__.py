"""Strategies shared by the property-based tests, and the coverage-guided fuzz harness (make fuzz)."""
