"""Batches of scans on one machine or a Ray cluster: one folder per scan, resumable, with a summary CSV."""

from .runner import run_batch
from .scan import BatchOptions, ScanResult, process_scan
from .summary import read_summary, write_summary

__all__ = ["BatchOptions", "ScanResult", "process_scan", "read_summary", "run_batch", "write_summary"]
