"""The planner: a pure cost model of a step (``model``, no torch, no Horovod), the
measurement of a job's figures (``measure``), and the command line
(``python -m hvd_hier.plan``, ``cli``)."""
