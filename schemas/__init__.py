"""scolaflux schemas."""
