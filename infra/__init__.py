"""scolaflux infra."""
