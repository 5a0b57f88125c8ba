"""Benchmarks of the feed checker (python -m bench): not tests, nothing here asserts on time.

bench/README.md has the command, the measured numbers and the profile findings.
"""
