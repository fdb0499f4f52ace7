"""Use cases and the ports they need; depends on the domain only."""
