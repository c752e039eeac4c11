from grader.report import TestStatus
from tests.notebooks import SOLUTION, submission


def test_reference_scores_full_marks(grade):
    report = grade(SOLUTION)
    assert report.status == "graded"
    assert report.score == report.max_score > 0
    assert all(t.status is TestStatus.PASSED for t in report.tests)


def test_built_submission_with_one_wrong_function_loses_only_its_points(grade, tmp_path):
    path = submission(tmp_path, bodies={"delta2": "return (y - y_hat) * sigmoid_prime(z2)"})
    report = grade(path)
    scores = report.function_scores()
    assert scores["delta2"][0] == 0
    assert all(scores[f][0] == scores[f][1] for f in ("sigmoid_prime", "delta1", "update"))
