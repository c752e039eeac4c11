"""Grade backpropagation notebooks: run each submission in a fresh kernel, judge values outside it."""

__version__ = "0.1.0"
