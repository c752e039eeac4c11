"""Grade backpropagation notebooks: run each in a fresh kernel, judge its values outside it."""

__version__ = "0.1.0"


def load_ipython_extension(shell: object) -> None:
    """`%load_ext grader` in a notebook: the %grader magic (`%grader check`), see grader.magic."""
    from grader.magic import load_ipython_extension as load

    load(shell)


def unload_ipython_extension(shell: object) -> None:
    """`%unload_ext grader`."""
    from grader.magic import unload_ipython_extension as unload

    unload(shell)
