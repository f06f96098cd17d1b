"""Publishing the curated sets: a dataset card built from the run (``card``), the Hub upload
(``publish``) and exports to the formats other trainers read (``export``)."""
