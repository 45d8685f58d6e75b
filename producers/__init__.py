"""scolaflux producers."""
