"""Files -> batches of changed paths per app. Knows nothing of processes."""
