"""Tests of ambientctl."""
