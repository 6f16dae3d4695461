"""What `evalbot worker` runs: the registry of arq jobs and cron jobs."""
