"""Deployment: predicting on files and exporting serving artifacts."""
