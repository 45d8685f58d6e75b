"""scolaflux processors."""
