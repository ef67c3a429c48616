"""Runs of jobs: the run store that skips done jobs and resumes killed ones (`store`), their result
files (`results`), and the dry run of a sweep (`dryrun`)."""
