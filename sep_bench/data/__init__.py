"""Datasets: layout readers and the embedded minigen benchmark."""
