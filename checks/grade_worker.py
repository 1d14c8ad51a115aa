"""What the grading processes' fork server imports before it forks one per submission.

:func:`checks.grade.grade_in_worker` starts each grading process from a fork server that has
imported this module, and so the grader, once (:func:`checks.grade.worker_main` runs in it).
"""

import sys

# nbformat validates with jsonschema, which imports rfc3987_syntax whenever it is installed
# (JupyterLab's dependencies bring it); that module compiles a grammar on import, about a
# second of processor time, for IRI formats that no notebook schema uses.  Marked absent,
# jsonschema goes without those two format checkers.
sys.modules.setdefault("rfc3987_syntax", None)

import checks.grade  # noqa: E402,F401
