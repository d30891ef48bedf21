"""`selectivbench reproduce`, by job: the paper's rules (`paper`), sweep sizes (`scales`), the runs of
a sweep (`plan`), the checks of its arguments (`arguments`), the dry run (`estimate`), the local and
Ray launchers (`launchers`), the driver and its worker (`driver`), the sweep folder's records and
outputs (`outputs`), tables and plots (`report`).

`selectivbench score`, on the same machinery: its driver and worker (`score`), the presets and the
--mixer door (`score_presets`), the score folder (`score_folders`), the scorecard (`scorecard`) and
the leaderboard (`leaderboard`)."""
