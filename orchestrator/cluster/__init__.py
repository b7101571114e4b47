"""Running a sweep's driver on a Ray cluster as a Ray Job (`jobs.py`): validating the spec and the output
folder before upload, what the job ships (working dir, allowlisted environment, never credentials), submit,
follow, stop, list."""
