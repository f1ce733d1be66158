"""The paper's comparisons as one command each (``tokalign experiment``): studies of ordinary generator runs.

A study (:data:`~tokalign.generate.experiment.studies.STUDIES`) is a set of arms, each a generator config that
differs from the others in one field; :func:`~tokalign.generate.experiment.run.run_study` trains them into one
resumable folder and writes the curves and the verdict on each of the paper's claims.
"""
