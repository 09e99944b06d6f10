"""Heron's auth gateway (see README.md and docs/auth.md)."""
