"""Grading where courses already run: a Gradescope autograder bundle, a PrairieLearn grader."""
