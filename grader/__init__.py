"""Grade backpropagation notebooks: run each in a fresh kernel, judge its values outside it."""

__version__ = "0.1.0"
