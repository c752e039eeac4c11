"""Show a report, or a class of them: terminal, feedback page, Gradescope results, CSV, plot."""
