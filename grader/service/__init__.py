"""`grader serve`: a submission server for a course, with its roster, queue and pages."""
