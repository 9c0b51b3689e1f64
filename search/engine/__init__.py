"""The engine under the commands: the run spec, the searcher, the driver that builds and
restores the Ray Tune search, its callbacks, the run folder and its storage, warm starts,
objectives, reproducible searches, the replay backend, bagging and what the search bought."""
