"""Tests of ambientctl debugging commands (ztunnel-config, why, analyze)."""
