"""Which ranks average together: the pure planning of every level's groups (``groups``,
including the elastic rule) and the Horovod process sets that carry them
(``process_sets``)."""
