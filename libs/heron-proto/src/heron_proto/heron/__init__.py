"""Generated from proto/heron by libs/heron-proto/generate.py; do not edit."""
