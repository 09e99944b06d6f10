"""Generated from proto/heron/v1 by libs/heron-proto/generate.py; do not edit."""
