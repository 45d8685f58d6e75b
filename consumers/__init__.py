"""scolaflux consumers."""
