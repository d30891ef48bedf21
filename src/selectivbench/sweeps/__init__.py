"""`selectivbench reproduce`, by job: the paper's rules (`paper`), sweep sizes (`scales`), the runs of
a sweep (`plan`), the checks of its arguments (`arguments`), the dry run (`estimate`), the local and
Ray launchers (`launchers`), the driver and its worker (`driver`), the sweep folder's records and
outputs (`outputs`), tables and plots (`report`)."""
