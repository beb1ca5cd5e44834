"""The backend-neutral pipeline of an explanation, one module per stage.

``checks`` (input validation) -> ``sampling`` (lime's 0/1 rows, their distances, the perturbed
batches through the classifier) -> ``rounds`` and ``adaptive`` (rows taken in rounds: ``dedupe``,
``num_samples="auto"``, ``time_budget``) -> ``surrogate`` (the float64 weighted ridge of every
label) -> ``explanation`` (``ImageExplanation``). ``executor`` holds the protocol the model and
surrogate stages run behind, and the CPU executor; ``limefast.device`` has the PyTorch one.
"""
