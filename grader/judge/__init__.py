"""Judging: the values a submission's calls returned in, test results out; no kernel, no files."""
