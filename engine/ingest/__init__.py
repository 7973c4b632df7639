"""Ingestion: extraction, chunking, the pipeline into storage and indexes, the job runner."""
