"""Run a submission: read it, start a sandboxed kernel, run its cells, call its functions."""
