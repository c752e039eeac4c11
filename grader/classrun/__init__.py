"""Grade a class: find the submissions, decide what needs grading, grade it, keep every report."""
