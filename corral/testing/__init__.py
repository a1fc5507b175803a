"""In-memory implementations and helpers for tests (corral's and users' own)."""
