"""Tests of the simulators package."""
