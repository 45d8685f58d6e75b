"""Reference geography: communes, départements, régions, académies and lycées (see README.md)."""
